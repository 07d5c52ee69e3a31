// tok-reference.js - the Hugging Face `tokenizers` library (its Node
// binding) as the reference for ouro-tokenize.
//
//   node tok-reference.js encode TOKENIZER.json < IN.jsonl > OUT.ids
//       each input line is a JSON string (or {"text": ...}); writes the
//       ids of each, blank-separated, one line per input line
//   node tok-reference.js bench TOKENIZER.json IN.jsonl
//       encodes every line and prints its speed in MB/s (one at a time,
//       as ouro-tokenize does, and with encodeBatch)
//   node tok-reference.js classes > gpt2-classes.txt
//       the class of every code point in the GPT-2 split pattern and the
//       Digits pre-tokenizer, as ranges "START-HEX CLASS": L letter,
//       N number, P other, S space; a "d" after it: Digits splits it off
//
// The module is looked up in $TOK_NODE_MODULES, else build/node/node_modules.
'use strict';
const fs = require('fs');
const path = require('path');

const dir = process.env.TOK_NODE_MODULES ? path.resolve(process.env.TOK_NODE_MODULES) :
	path.join(__dirname, '..', 'build', 'node', 'node_modules');
const tk = require(path.join(dir, 'tokenizers'));
const { Tokenizer } = tk;

// Classifies every code point by how the reference's pre-tokenizers split
// it next to a letter, a digit and a symbol.
function classes() {
	const bl = tk.byteLevelPreTokenizer(false, true);
	const dg = tk.digitsPreTokenizer(true);
	const n = (s) => bl.preTokenizeString(s).length;
	const out = [];
	let prev = null;
	for (let cp = 0; cp <= 0x10ffff; cp++) {
		if (cp >= 0xd800 && cp <= 0xdfff) continue;
		const c = String.fromCodePoint(cp);
		let k = n('a' + c) === 1 ? 'L' : n('1' + c) === 1 ? 'N' : n('!' + c) === 1 ? 'P' : 'S';
		if (dg.preTokenizeString('a' + c + 'a').length === 3) k += 'd';
		if (k !== prev) out.push(cp.toString(16) + ' ' + k);
		prev = k;
	}
	process.stdout.write(out.join('\n') + '\n');
}

function readLines(file) {
	const data = fs.readFileSync(file, 'utf8');
	const lines = data.split('\n');
	if (lines.length && lines[lines.length - 1] === '') lines.pop();
	return lines.map((l) => {
		const v = JSON.parse(l);
		return typeof v === 'string' ? v : v.text;
	});
}

async function encodeAll(tok, texts, batch) {
	const out = [];
	for (let i = 0; i < texts.length; i += batch) {
		const encs = await tok.encodeBatch(texts.slice(i, i + batch));
		for (const e of encs) out.push(e.getIds());
	}
	return out;
}

async function main() {
	const [mode, tokfile, infile] = process.argv.slice(2);
	if (mode === 'classes') return classes();
	const tok = Tokenizer.fromFile(tokfile);
	if (mode === 'encode') {
		const texts = readLines(infile || '/dev/stdin');
		const ids = await encodeAll(tok, texts, 512);
		process.stdout.write(ids.map((v) => v.join(' ')).join('\n') + (ids.length ? '\n' : ''));
	} else if (mode === 'bench') {
		const texts = readLines(infile);
		const bytes = texts.reduce((n, t) => n + Buffer.byteLength(t), 0);
		let t0 = process.hrtime.bigint();
		for (const t of texts) await tok.encode(t);
		let s = Number(process.hrtime.bigint() - t0) / 1e9;
		console.log(`reference one-by-one ${(bytes / 1e6 / s).toFixed(2)} MB/s`);
		t0 = process.hrtime.bigint();
		await encodeAll(tok, texts, 4096);
		s = Number(process.hrtime.bigint() - t0) / 1e9;
		console.log(`reference encodeBatch ${(bytes / 1e6 / s).toFixed(2)} MB/s`);
	} else {
		console.error('usage: tok-reference.js encode|bench TOKENIZER.json [FILE] | classes');
		process.exit(2);
	}
}
main().catch((e) => { console.error('tok-reference.js: ' + e); process.exit(1); });
