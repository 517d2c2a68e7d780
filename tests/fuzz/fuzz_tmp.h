/*
 * fuzz_tmp.h - a scratch folder for the targets that write files
 * (fuzz_dataset, fuzz_tbevents): one per process, on /dev/shm when it is
 * writable (tmpfs: fsync costs nothing there, and a fuzzer calls it
 * thousands of times a second), removed with its contents at exit.
 */
#ifndef FX_FUZZ_TMP_H
#define FX_FUZZ_TMP_H

#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char fuzz_tmp_dir[256];

static int fuzz_tmp_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void fuzz_tmp_cleanup(void)
{
    if (fuzz_tmp_dir[0])
        nftw(fuzz_tmp_dir, fuzz_tmp_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* The folder's path (not created: the module under test creates it). */
static const char *fuzz_tmp(const char *what)
{
    if (!fuzz_tmp_dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_tmp_dir, sizeof fuzz_tmp_dir, "%s/fx_fuzz_%s.%d", base, what, (int)getpid());
        atexit(fuzz_tmp_cleanup);
    }
    return fuzz_tmp_dir;
}

#endif
