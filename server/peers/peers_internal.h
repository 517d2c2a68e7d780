/* peers_internal.h - state shared by the files of server/peers/ (private). */
#ifndef FXPR_PEERS_INTERNAL_H
#define FXPR_PEERS_INTERNAL_H

#include <pthread.h>

#include "peers/peers.h"

struct fxc_channel;

typedef struct {
    char name[FXPR_NAME_MAX + 1];
    char addr[FXPR_ADDR_MAX + 1];
    bool self;                /* this daemon's own entry: skipped */
    struct fxc_channel *ch;   /* opened at the first call (under mu) */
} fxpr__peer;

struct fxpr_peers {
    pthread_mutex_t mu;       /* the channels */
    fxpr__peer peer[FXPR_MAX_PEERS];
    int n;
    char node[FXPR_NAME_MAX + 1 + 8];
    bool node_given;
    char version[64];
    char *secret;
    char *tls_cert_file, *tls_key_file, *tls_ca_file, *comm_host;
    bool tls_client_cert;
    size_t max_message_bytes;
    fxcm_memstore *kv;        /* what KvSet/KvGet serve */
    fxcm_store kv_store;
    pthread_t greeter;
    bool greeter_started;
};

int fxpr__kv_init(fxpr_peers *p, char *err, size_t errlen);
void fxpr__kv_free(fxpr_peers *p);

#endif
