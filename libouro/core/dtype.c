/*
 * dtype.c - element types of tensors: their safetensors names, sizes, and
 * conversion of the float formats (F32, F16, BF16) to and from float.
 *
 * Loads go through memcpy so that tensors at any byte offset of a mapped
 * file are read without unaligned-access undefined behaviour.
 */
#include <math.h>
#include <string.h>

#include "ouro.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "safetensors data is little-endian; this build assumes a little-endian host");

static const struct {
	const char *name;
	size_t size;
} dtypes[OURO_NDTYPES] = {
	[OURO_F32] = {"F32", 4},  [OURO_F16] = {"F16", 2},
	[OURO_BF16] = {"BF16", 2}, [OURO_F64] = {"F64", 8},
	[OURO_I8] = {"I8", 1},     [OURO_U8] = {"U8", 1},
	[OURO_I16] = {"I16", 2},   [OURO_I32] = {"I32", 4},
	[OURO_I64] = {"I64", 8},   [OURO_BOOL] = {"BOOL", 1},
};

const char *ouro_dtype_name(enum ouro_dtype dt)
{
	return dtypes[dt].name;
}

int ouro_dtype_parse(const char *name)
{
	for (int i = 0; i < OURO_NDTYPES; i++)
		if (strcmp(name, dtypes[i].name) == 0)
			return i;
	return -1;
}

size_t ouro_dtype_size(enum ouro_dtype dt)
{
	return dtypes[dt].size;
}

int64_t ouro_tensor_numel(const struct ouro_tensor *t)
{
	int64_t n = 1;

	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

static float bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;

	memcpy(&f, &u, 4);
	return f;
}

static uint16_t f32_to_bf16(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	if ((u & 0x7fffffff) > 0x7f800000)      /* NaN: keep it quiet */
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fff + ((u >> 16) & 1);           /* round to nearest even */
	return (uint16_t)(u >> 16);
}

static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
	float f;

	if (exp == 0) {                          /* zero or subnormal */
		f = ldexpf((float)man, -24);
		return sign ? -f : f;
	}
	if (exp == 31)
		u = sign | 0x7f800000 | (man << 13);
	else
		u = sign | ((exp + 112) << 23) | (man << 13);
	memcpy(&f, &u, 4);
	return f;
}

static uint16_t f32_to_f16(float f)
{
	uint32_t u, sign, man;
	int exp;

	memcpy(&u, &f, 4);
	sign = (u >> 16) & 0x8000;
	if ((u & 0x7fffffff) > 0x7f800000)
		return (uint16_t)(sign | 0x7e00);
	exp = (int)((u >> 23) & 0xff) - 127 + 15;
	man = u & 0x7fffff;
	if (exp >= 31)
		return (uint16_t)(sign | 0x7c00);        /* overflow: infinity */
	if (exp <= 0) {                                  /* subnormal or zero */
		if (exp < -10)
			return (uint16_t)sign;
		man |= 0x800000;
		int shift = 14 - exp;
		uint32_t half = man >> shift, rem = man & ((1u << shift) - 1);
		uint32_t mid = 1u << (shift - 1);
		if (rem > mid || (rem == mid && (half & 1)))
			half++;
		return (uint16_t)(sign | half);
	}
	uint32_t h = ((uint32_t)exp << 10) | (man >> 13), rem = man & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
		h++;                                     /* may carry into exponent: correct */
	return (uint16_t)(sign | h);
}

/* Widens n 16-bit floats at src (any alignment) with conv; inlined with
 * conv known, so each format gets its own loop. */
static inline void widen16(float *dst, const unsigned char *src, size_t n, float (*conv)(uint16_t))
{
	uint16_t h;

	for (size_t i = 0; i < n; i++) {
		memcpy(&h, src + 2 * i, 2);
		dst[i] = conv(h);
	}
}

/* Narrows n floats into 16-bit floats at dst (any alignment) with conv. */
static inline void narrow16(unsigned char *dst, const float *src, size_t n, uint16_t (*conv)(float))
{
	uint16_t h;

	for (size_t i = 0; i < n; i++) {
		h = conv(src[i]);
		memcpy(dst + 2 * i, &h, 2);
	}
}

void ouro_to_f32(float *dst, const void *src, enum ouro_dtype dt, size_t n)
{
	switch (dt) {
	case OURO_F32:
		memcpy(dst, src, n * 4);
		break;
	case OURO_BF16:
		widen16(dst, src, n, bf16_to_f32);
		break;
	case OURO_F16:
		widen16(dst, src, n, f16_to_f32);
		break;
	default:
		break;   /* callers check the dtype first */
	}
}

void ouro_from_f32(void *dst, const float *src, enum ouro_dtype dt, size_t n)
{
	switch (dt) {
	case OURO_F32:
		memcpy(dst, src, n * 4);
		break;
	case OURO_BF16:
		narrow16(dst, src, n, f32_to_bf16);
		break;
	case OURO_F16:
		narrow16(dst, src, n, f32_to_f16);
		break;
	default:
		break;
	}
}
