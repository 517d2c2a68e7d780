/*
 * tbevents.h - TensorBoard event files (scalars), so training curves open in
 * TensorBoard: DIR/events.out.tfevents.<unix seconds>.<host>.<pid>.<n>, a
 * TFRecord stream (length, masked CRC-32C of the length, an Event protobuf,
 * masked CRC-32C of the data) starting with a file_version event.
 * Written only by the training jobs (jobs.c), one writer per job run.
 */
#ifndef FXTB_EVENTS_H
#define FXTB_EVENTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct fxtb_writer fxtb_writer;

/* Every function that can fail returns 0 or an fxs_status code
 * (base/status.h) with the message in err: FXS_INVALID_ARGUMENT for a bad
 * argument, FXS_RESOURCE_EXHAUSTED for a full disk or out of memory. */

/* Creates DIR (and parents) and a new event file in it; *out gets the
 * writer (close with fxtb_close). */
int fxtb_open(const char *dir, fxtb_writer **out, char *err, size_t errlen);
/* Buffers a scalar event (tag not empty); flushes when the buffer is large,
 * unless the last write failed (then only fxtb_flush tries again). */
int fxtb_scalar(fxtb_writer *w, const char *tag, int64_t step, double value, char *err,
                size_t errlen);
/* Writes and fsyncs what is buffered. When the write fails, the file is cut
 * back to its whole records and the events stay buffered (up to 1 MiB) for
 * the next flush. */
int fxtb_flush(fxtb_writer *w, char *err, size_t errlen);
/* Flushes (errors ignored) and frees; NULL is fine. */
void fxtb_close(fxtb_writer *w);
/* The event file's path (owned by w). */
const char *fxtb_path(const fxtb_writer *w);

/* CRC-32C (Castagnoli) of data, and TensorFlow's masked form of it. */
uint32_t fxtb_crc32c(const void *data, size_t len);
uint32_t fxtb_masked_crc(const void *data, size_t len);

#endif
