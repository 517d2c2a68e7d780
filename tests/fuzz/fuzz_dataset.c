/*
 * fuzz_dataset.c - dataset uploads (server/datasets/upload.c): the chunks
 * of an UploadDataset stream, each checked on the wire and unpacked as the
 * RPC layer does, then staged (dtype, shapes, sizes, per-tensor
 * consistency across chunks, quotas) and, when byte 0 says so, committed
 * (shards written, the record stored) and loaded back as the trainer loads
 * it (fxds_dataset_open: the shards' safetensors read and checked), then
 * deleted. The store and the registry live in a per-process folder on
 * /dev/shm (tmpfs: the fsyncs cost nothing) and are opened once.
 *
 * Input: byte 0 (bit 0: commit), then chunks, each a 2-byte little-endian
 * length and a packed fluxion.v1.UploadDatasetChunk. The limits are small
 * (1 MiB a dataset, 64 KiB shards) so that every size check is reached.
 */
#include "fuzz_tmp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "datasets/datasets.h"
#include "rpc/wirecheck.h"
#include "store/store.h"

static fxdb_store *g_st;
static fxds_datasets *g_ds;

static void init(void)
{
    if (g_ds)
        return;
    char err[512];
    const char *dir = fuzz_tmp("ds");
    fxl_configure(FXL_ERROR, false); /* no line per stored dataset */
    fxds_datasets_opts o = {.max_dataset_bytes = 1 << 20, .shard_bytes = 64 << 10};
    if (fxdb_store_open(dir, &g_st, err, sizeof err) != 0 ||
        fxds_datasets_open(g_st, &o, &g_ds, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_dataset: %s\n", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size < 1)
        return 0;
    bool commit = data[0] & 1;
    data++, size--;
    fxds_upload *u = NULL;
    char err[512] = "", key[128];
    int rc = 0;
    while (!rc && size >= 2) {
        size_t n = (size_t)data[0] | (size_t)data[1] << 8;
        data += 2, size -= 2;
        if (n > size)
            n = size;
        const ProtobufCMessageDescriptor *d = &fluxion__v1__upload_dataset_chunk__descriptor;
        bool malformed = false;
        if (fxr_wirecheck(d, data, n, &malformed, err, sizeof err) != 0 || malformed)
            break;
        Fluxion__V1__UploadDatasetChunk *c =
            (Fluxion__V1__UploadDatasetChunk *)protobuf_c_message_unpack(d, NULL, n, data);
        data += n, size -= n;
        if (!c)
            break;
        if (!u) {
            snprintf(key, sizeof key, "default/%s", c->name[0] ? c->name : "d");
            rc = fxds_upload_begin(g_ds, key, c->description, &u, err, sizeof err);
        }
        for (size_t i = 0; !rc && i < c->n_tensors; i++)
            rc = fxds_upload_add(u, c->tensors[i], err, sizeof err);
        if (rc && !err[0])
            abort(); /* a refusal says why */
        fluxion__v1__upload_dataset_chunk__free_unpacked(c, NULL);
    }
    if (getenv("FX_FUZZ_DEBUG")) /* to check what the seeds reach */
        fprintf(stderr, "fuzz_dataset: %s\n", rc ? err : u ? "staged" : "no upload");
    if (!u)
        return 0;
    if (rc || !commit) {
        fxds_upload_abort(u);
        return 0;
    }
    Fluxion__V1__Dataset *info = NULL;
    if (fxds_upload_commit(u, &info, err, sizeof err) != 0) {
        if (!err[0])
            abort();
        return 0; /* the commit frees the upload either way (datasets.h) */
    }
    if (getenv("FX_FUZZ_DEBUG"))
        fprintf(stderr, "fuzz_dataset: committed\n");
    fxds_dataset *ds = NULL;
    if (fxds_dataset_open(g_ds, key, &ds, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_dataset: a committed dataset does not load: %s\n", err);
        abort();
    }
    const fxds_columns *cols = fxds_dataset_columns(ds);
    if (!cols || cols->num_samples != (int64_t)info->num_samples)
        abort();
    fxds_dataset_release(ds);
    fluxion__v1__dataset__free_unpacked(info, NULL);
    if (fxds_dataset_delete(g_ds, key, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_dataset: cannot delete a dataset: %s\n", err);
        abort();
    }
    return 0;
}
