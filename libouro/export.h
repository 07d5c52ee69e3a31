/*
 * export.h - tensors out to NumPy: .npy files and .npz archives (part of
 * the public interface; included by ouro.h; implemented in npy.c).
 *
 * A .npy file is NumPy's format 1.0: a magic string, a Python-literal
 * header (dtype, order, shape) padded to 64 bytes, then the data in C
 * order, little-endian. A .npz archive is a zip file of such members,
 * here deflate-compressed (as numpy.savez_compressed writes them), which
 * numpy.load opens as a dictionary keyed by member name without ".npy".
 *
 * dtypes map one to one (F32 '<f4', F16 '<f2', F64 '<f8', I8 '|i1',
 * U8 '|u1', I16 '<i2', I32 '<i4', I64 '<i8', BOOL '|b1') except BF16, which
 * NumPy lacks: it is written as float32 ('<f4'), widened exactly (a bf16
 * value is the top half of the float32 with the same value, so
 * x.view(np.uint32) >> 16 gives back the stored bits).
 *
 * The archive is written front to back in one pass and never seeks, so f
 * may be a pipe; every member is zip64 (sizes and offsets in 64 bits), so
 * members and archives over 4 GiB need no other path.
 */
#ifndef OURO_EXPORT_H
#define OURO_EXPORT_H

#include <stdio.h>

struct ouro_tensor;

/* Writes t to f as a .npy file. `what` names f in messages. */
int ouro_npy_write(FILE *f, const char *what, const struct ouro_tensor *t);

struct ouro_npz;

/* Starts a .npz archive on f (positioned at its start). `what` names f in
 * messages; level is a zlib level, 0..9, or -1 for zlib's default. */
int ouro_npz_new(struct ouro_npz **z, FILE *f, const char *what, int level);
/* Appends the member `name`.npy holding t. Names must be unique and
 * non-empty; "/" separates folders in the archive, as in any zip. */
int ouro_npz_add(struct ouro_npz *z, const char *name, const struct ouro_tensor *t);
/* Writes the archive's central directory and frees z; f stays open and
 * the caller flushes and closes it. */
int ouro_npz_finish(struct ouro_npz *z);
/* Frees z without finishing the archive (after a failure). */
void ouro_npz_free(struct ouro_npz *z);

#endif
