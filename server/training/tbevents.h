/*
 * tbevents.h - TensorBoard event files (scalars), so training curves open in
 * TensorBoard: DIR/events.out.tfevents.<unix seconds>.<host>.<pid>.<n>, a
 * TFRecord stream (length, masked CRC-32C of the length, an Event protobuf,
 * masked CRC-32C of the data) starting with a file_version event.
 */
#ifndef FXTB_EVENTS_H
#define FXTB_EVENTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct fxtb_writer fxtb_writer;

/* Creates DIR (and parents) and a new event file in it. */
fxtb_writer *fxtb_open(const char *dir, char *err, size_t errlen);
int fxtb_scalar(fxtb_writer *w, const char *tag, int64_t step, double value);
int fxtb_flush(fxtb_writer *w); /* write + fsync what is buffered */
void fxtb_close(fxtb_writer *w);
/* The event file's path (owned by w). */
const char *fxtb_path(const fxtb_writer *w);

/* CRC-32C (Castagnoli) of data, and TensorFlow's masked form of it. */
uint32_t fxtb_crc32c(const void *data, size_t len);
uint32_t fxtb_masked_crc(const void *data, size_t len);

#endif
