#!/usr/bin/env python3
"""make-corpus.py - writes the tokenizer test corpus, deterministically.

    python3 tests/tokenizer/make-corpus.py > tests/tokenizer/corpus.jsonl
    python3 tests/tokenizer/make-corpus.py --random SEED N > random.jsonl
    python3 tests/tokenizer/make-corpus.py --train > spm-train.txt

Each output line is one JSON string, one sequence. The corpus mixes what
trips tokenizers up: prose with contractions, code (this project's own C
sources and man pages), numbers in many scripts, whitespace runs, CRLF and
tabs, CJK, right-to-left scripts, emoji with joiners and modifiers,
combining marks, special tokens inside text, control characters, the code
points whose UTF-8 holds the bytes the Ouro vocabulary lacks, and random
text. --random writes N random lines for a fresh differential test;
--train writes plain text lines (no random characters) to train the
SentencePiece test models on.

Random characters come only from code points assigned in Python's Unicode
database (and the never-assigned planes 4-11): characters added in later
Unicode versions than the library's utf8proc knows are classified
differently by the reference (see tests/unit/tokenizer_unicode.c).
"""
import glob
import json
import os
import random
import sys
import unicodedata

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')

WORDS = """the of and to in is was he for it with as his on be at by had are but
from or have an they which one you were her all she there would their we him
been has when who will more no if out so said what up its about into than them
can only other new some could time these two may then do first any my now such
like our over man me even most made after also did many before must through
back years where much your way well down should because each just those people
how too little state good very make world still own see men work long get here
between both life being under never day same another know while last might us
great old year off come since against go came right used take three small
language model token loop exit gate layer weight tensor record program library
encoder decoder sentence piece byte merge rank vocabulary unicode character
""".split()

CONTRACTIONS = ["don't", "it's", "I'm", "we'll", "they've", "she'd", "you're",
                "can't", "won't", "isn't", "IT'S", "Don'T", "o'clock", "rock'n'roll",
                "'tis", "y'all", "we'd've", "ma'am", "it\u2019s", "don\u2019t",
                "''s", "'s'", "'", "''", "' s", "'re'", "'ll'll", "'D", "'M", "'ve"]

MULTI = [
    "Grüße aus München, die Straße ist schön.", "Ça va très bien, merci — à bientôt !",
    "¿Dónde está la biblioteca? ¡Allí, señor!", "Привет, как дела? Всё хорошо, спасибо.",
    "Καλημέρα κόσμε, τι κάνεις;", "مرحبا بالعالم، كيف حالك؟", "שלום עולם, מה שלומך?",
    "नमस्ते दुनिया, आप कैसे हैं?", "สวัสดีชาวโลก ยินดีที่ได้รู้จัก", "你好，世界！今天天气很好。",
    "こんにちは世界。カタカナとひらがな、そして漢字。", "안녕하세요 세계, 반갑습니다.",
    "Xin chào thế giới, hôm nay trời đẹp.", "İstanbul'da ılık bir gün; IĞDIR ŞİŞLİ.",
    "Zażółć gęślą jaźń.", "გამარჯობა მსოფლიო", "Բարեւ աշխարհ", "ሰላም ዓለም",
    "வணக்கம் உலகம்", "ওহে বিশ্ব", "ಹಲೋ ವರ್ಲ್ಡ್", "Sawubona Mhlaba", "Hallå världen, åäö ÅÄÖ",
    "Ἐν ἀρχῇ ἦν ὁ λόγος", "ǅemal ǈubljana ǋenov", "ﬁne ﬂow ﬀ ﬃ ﬄ ﬅ ﬆ", "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３",
    "Ω ≈ ç √ ∫ ˜ µ ≤ ≥ ÷ ∞ ∑ ∏ π ∂ ∆", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝐁𝐨𝐥𝐝 𝒮𝒸𝓇𝒾𝓅𝓉",
    "ㄅㄆㄇㄈ ㄉㄊㄋㄌ", "ᠮᠣᠩᠭᠣᠯ", "ꦲꦏ꧀ꦱꦫ", "𓀀𓀁𓀂 𒀀𒀁", "ᚠᚢᚦᚨᚱᚲ", "ꓮꓯꓰ", "ⴰⵣⵓⵍ",
]

EMOJI = ["😀", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🇩🇪", "🇯🇵", "1️⃣", "❤️",
         "🧑🏿\u200d💻", "👩🏻\u200d🦰", "🤷\u200d♀️", "🐈\u200d⬛", "☺", "✈︎", "🫠", "🥲",
         "#️⃣", "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", "👁️\u200d🗨️"]

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
            "<file_sep>", "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>",
            "<issue_closed>", "<jupyter_start>", "<jupyter_text>", "<jupyter_code>",
            "<jupyter_output>", "<jupyter_script>", "<empty_output>",
            "<|im_sta", "<<think>>", "<think >", "<THINK>", "</think", "<|im_end|", "<|", "|>",
            "<|im_start|><|im_end|>", "<think></think>", "<|endoftext|>\n"]

SPACES = [" ", "  ", "   ", "\t", "\t\t", " \t ", "\n", "\n\n", "\r\n", "\r", "\u00a0",
          "\u3000", "\u2028", "\u2029", "\u0085", "\u200b", "\u2003", "\u202f", "\u205f",
          "\u1680", "\u000b", "\u000c", "\ufeff", " \n ", "\u180e", "      "]

DIGITS = ["0123456789", "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "０１２３４５６７８９", "²³¹⁴",
          "½⅓¼⅞", "ⅠⅡⅢⅫⅯ", "①②③⑳", "𝟎𝟏𝟐", "৩৪৫", "๑๒๓", "〇一二三", "𒐀𒐁"]

# code points whose UTF-8 contains a byte the Ouro vocabulary has no
# symbol for: 4, 6, 19, 20, 22, 29 and the lead bytes 241 and 242
UNMAPPED = ["\x04", "\x06", "\x13", "\x14", "\x16", "\x1d", "\U00040000", "\U00050001",
            "\U0007ffff", "\U00080000", "\U0009abcd", "\U000bfffd"]


def assigned_chars():
    """Code points Python's Unicode database knows, by block of interest."""
    out = []
    for cp in range(0x20, 0x30000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if unicodedata.category(c) != 'Cn':
            out.append(c)
    return out


def rand_word(r):
    w = r.choice(WORDS)
    k = r.random()
    if k < 0.1:
        w = w.capitalize()
    elif k < 0.13:
        w = w.upper()
    return w


def prose(r):
    n = r.randint(3, 30)
    parts = []
    for i in range(n):
        k = r.random()
        if k < 0.08:
            parts.append(r.choice(CONTRACTIONS))
        elif k < 0.11:
            parts.append(str(r.randint(0, 10 ** r.randint(1, 9))))
        else:
            parts.append(rand_word(r))
        if r.random() < 0.12:
            parts[-1] += r.choice([",", ";", ":", "!", "?", ".", "...", "—", ")", "\"", "'"])
    s = " ".join(parts)
    s = s[0].upper() + s[1:] + r.choice([".", "!", "?", "", "\u2026"])
    return s


def numbers(r):
    k = r.randint(0, 9)
    if k == 0:
        return f"{r.randint(0, 10**12):,}"
    if k == 1:
        return f"{r.uniform(-1e6, 1e6):.{r.randint(0, 8)}f}"
    if k == 2:
        return f"{r.uniform(-1, 1):.3e}"
    if k == 3:
        return f"+1 ({r.randint(100,999)}) {r.randint(100,999)}-{r.randint(1000,9999)}"
    if k == 4:
        return f"{r.randint(1900,2100)}-{r.randint(1,12):02d}-{r.randint(1,28):02d}T{r.randint(0,23):02d}:{r.randint(0,59):02d}Z"
    if k == 5:
        return f"0x{r.getrandbits(r.choice([8,16,32,64])):x}"
    if k == 6:
        return "".join(r.choice(r.choice(DIGITS)) for _ in range(r.randint(1, 20)))
    if k == 7:
        return f"v{r.randint(0,9)}.{r.randint(0,99)}.{r.randint(0,999)}-rc{r.randint(1,9)}"
    if k == 8:
        return " ".join(str(r.randint(0, 999)) for _ in range(r.randint(2, 12)))
    return f"{r.randint(1,99)}% of ${r.randint(1,9999)}.{r.randint(0,99):02d} is €{r.randint(0,999)}"


def whitespace(r):
    s = ""
    for _ in range(r.randint(1, 8)):
        s += r.choice(SPACES) * r.randint(1, 4)
        if r.random() < 0.7:
            s += r.choice([rand_word(r), r.choice(MULTI)[:8], str(r.randint(0, 99)), "!", "é"])
    return s


def special(r):
    s = ""
    for _ in range(r.randint(1, 6)):
        k = r.random()
        if k < 0.4:
            s += r.choice(SPECIALS)
        elif k < 0.7:
            s += rand_word(r)
        else:
            s += r.choice(SPACES + ["x", "?", "user\n", "assistant\n", "12"])
    return s


def emoji(r):
    return "".join(r.choice(EMOJI + [" ", rand_word(r), "!", "\u200d", "\ufe0f"]) for _ in range(r.randint(1, 10)))


def combining(r):
    base = r.choice(["e", "a", "o", "n", "i", "u", "Z", "ᄀ", "क", "ع", " "])
    marks = [chr(c) for c in list(range(0x300, 0x370)) + [0x93f, 0x94d, 0x1161, 0x11a8, 0x651, 0x20dd]]
    return "".join(base + "".join(r.choice(marks) for _ in range(r.randint(0, 6))) for _ in range(r.randint(1, 8)))


def controls(r):
    pool = [chr(c) for c in range(0, 0x20)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xa0)] + UNMAPPED
    return "".join(r.choice(pool + [rand_word(r), " "]) for _ in range(r.randint(1, 12)))


def random_text(r, chars):
    n = r.randint(1, 60)
    k = r.random()
    if k < 0.3:
        return "".join(r.choice(chars) for _ in range(n))
    if k < 0.5:
        return "".join(chr(r.randint(0x20, 0x7e)) for _ in range(n))
    if k < 0.7:   # one script block at a time
        start = r.choice([0x80, 0x370, 0x400, 0x590, 0x600, 0x900, 0xe00, 0x1100, 0x3040,
                          0x4e00, 0xac00, 0x1f300, 0x20000, 0x2200, 0x2500, 0xfb00, 0xff00])
        pool = [c for c in (chr(x) for x in range(start, start + 256))
                if unicodedata.category(c) != 'Cn' and not 0xd800 <= ord(c) <= 0xdfff]
        return "".join(r.choice(pool + [" "]) for _ in range(n))
    parts = [prose, numbers, whitespace, special, emoji, combining, controls]
    return "".join(r.choice(parts)(r) for _ in range(r.randint(2, 4)))


def code_lines():
    """This project's own sources and pages, line by line."""
    lines = []
    pats = ["libouro/tok/*.[ch]", "libouro/tokenizer.h",
            "cmd/ouro-tokenize.c", "man/ouro-tokenize.1", "tests/tokenizer/make-corpus.py"]
    for pat in pats:
        for path in sorted(glob.glob(os.path.join(ROOT, pat))):
            with open(path, encoding='utf-8') as f:
                lines += f.read().split('\n')
    return lines


def corpus():
    r = random.Random(20240601)
    chars = assigned_chars()
    out = []
    # fixed cases first
    out += ["", " ", "\n", "  ", "a", "Hello world! 12345 apples", "  spaces   and\ttabs\n\nnewlines",
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n"]
    out += CONTRACTIONS + MULTI + EMOJI + SPECIALS + SPACES + DIGITS + UNMAPPED
    out += [chr(c) for c in range(0, 0x80)]
    out += ["a" * 500, "ab" * 300, "1" * 300, " " * 200 + "x", "\t" * 100, "é" * 200,
            "".join(r.choice("abcdefghij") for _ in range(3000)), "😀" * 100,
            "x" + "\u0301" * 200, "\r\n" * 50, "".join(r.choice(WORDS) for _ in range(1000))]
    # code: single lines, and blocks with their newlines
    code = code_lines()
    out += code[:3000]
    for i in range(0, min(len(code), 3000), 7):
        out.append("\n".join(code[i:i + r.randint(2, 12)]))
    for i in range(0, min(len(code), 1500), 11):
        out.append("\r\n".join(code[i:i + 5]))
    gens = [prose] * 6 + [numbers] * 2 + [whitespace] * 2 + [special, emoji, combining, controls]
    while len(out) < 11000:
        k = r.random()
        if k < 0.75:
            out.append(r.choice(gens)(r))
        else:
            out.append(random_text(r, chars))
    return out


def main():
    if len(sys.argv) == 2 and sys.argv[1] == '--train':
        r = random.Random(7)
        gens = [prose] * 8 + [numbers, whitespace, special, emoji]
        lines = [s for s in code_lines() if s.strip()] + MULTI * 20
        lines += [r.choice(gens)(r) for _ in range(12000)]
        for s in lines:
            s = s.replace("\r", " ").replace("\n", " ")
            sys.stdout.write(s + "\n")
        return
    if len(sys.argv) == 4 and sys.argv[1] == '--random':
        r = random.Random(int(sys.argv[2]))
        chars = assigned_chars() + [chr(c) for c in range(0x40000, 0x40100)]
        lines = [random_text(r, chars) for _ in range(int(sys.argv[3]))]
    else:
        lines = corpus()
    w = sys.stdout
    for s in lines:
        w.write(json.dumps(s, ensure_ascii=False) + "\n")


if __name__ == '__main__':
    main()
