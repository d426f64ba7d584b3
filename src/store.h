/* store — ferry's SQLite database: relay-issued keys (kept as SHA-256 hashes, never the key) and
 * one usage record per request. Two ways in:
 *   - struct store: one connection for one thread at a time (the CLI, tests, the writer thread);
 *   - struct store_writer: the store thread of a running ferry. It owns its own connection,
 *     commits usage records pushed by the workers in batches (the request path never waits on
 *     disk), and keeps an immutable, reference-counted snapshot of the keys (struct keyring) that
 *     it rebuilds whenever another connection (the CLI) changed the database.
 * Functions that can fail return 0 or a negative errno-style code (SQLite's are translated here:
 * -ENOENT not found / no such store, -EEXIST duplicate, -EINVAL bad argument, -EBUSY locked,
 * -EPROTO store from a newer ferry, -EIO anything else). */
#ifndef FERRY_STORE_H
#define FERRY_STORE_H

#include <stddef.h>
#include <stdint.h>

/* ---- relay keys ---- */

#define STORE_KEY_PREFIX "sk-ferry-"
#define STORE_KEY_PREFIX_LEN 9
#define STORE_KEY_RANDOM_LEN 40 /* base62 characters from getrandom(2) */
#define STORE_KEY_LEN (STORE_KEY_PREFIX_LEN + STORE_KEY_RANDOM_LEN)
#define STORE_HASH_LEN 32

/* Limits on what a key row holds (enforced by store_key_create). A name is 1..STORE_NAME_MAX of
 * A-Z a-z 0-9 . _ @ : + -, not only digits (those are ids) and not starting with '-'. */
#define STORE_NAME_MAX 64
#define STORE_LIST_MAX 1024 /* models or upstreams, as a comma list */

/* A key as the CLI shows it: no secret in here, only the display prefix ("sk-ferry-AbCd…"). */
struct store_key {
    int64_t id;
    char name[STORE_NAME_MAX + 1];
    char prefix[32];
    char models[STORE_LIST_MAX + 1];    /* comma list of globs; "" = every model */
    char upstreams[STORE_LIST_MAX + 1]; /* comma list of upstream names; "" = every upstream */
    int64_t created_at;                 /* unix ms */
    int64_t expires_at;                 /* unix ms; 0 = never */
    int64_t revoked_at;                 /* unix ms; 0 = not revoked */
};

/* SHA-256 of a presented key (the bytes after "Bearer ", or of an api-key / x-api-key header),
 * as stored and as keyring_find() looks it up. Hash whatever the client sent, unvalidated:
 * the table only holds hashes of well-formed keys, so anything else simply is not found. */
int store_key_hash(const char *key, size_t len, unsigned char out[STORE_HASH_LEN]);

/* 1 when key looks like a relay key (prefix + 40 base62 characters), else 0. A cheap filter:
 * a client that sends its real OpenAI key to a gateway can be told so without a lookup. */
int store_key_wellformed(const char *key, size_t len);

/* ---- one connection ---- */

struct store;

/* Opens (create: creating when missing) the database at path, in WAL mode with a busy timeout,
 * and brings its schema up to date (PRAGMA user_version; idempotent, safe against concurrent
 * openers). On failure writes a message into err (may be NULL) and returns -ENOENT when the file
 * is missing and create is 0, -EPROTO when a newer ferry wrote it, -EIO otherwise. */
int store_open(const char *path, int create, struct store **out, char *err, size_t errlen);
void store_close(struct store *s);

/* The last SQLite error message of this connection (for diagnostics; never holds a secret). */
const char *store_errmsg(const struct store *s);

/* Schema version of the open database, and the one this build writes. */
int store_schema_version(struct store *s, int *version);
#define STORE_SCHEMA_VERSION 1

/* Creates a key. models and upstreams are comma lists (NULL or "" = no restriction); expires_at
 * is unix ms (0 = never); now_ms is the creation time. Writes the full key, NUL-terminated, into
 * key_out: the caller shows it once and wipes it — it is stored nowhere. row (may be NULL)
 * receives the stored row. -EEXIST when the name is taken, -EINVAL for a bad name or list. */
int store_key_create(struct store *s, const char *name, const char *models, const char *upstreams,
                     int64_t expires_at, int64_t now_ms, char key_out[STORE_KEY_LEN + 1],
                     struct store_key *row);

/* Looks a key up by id, by name, or by "ID|NAME" as the CLI takes it (an all-digit string is an
 * id first, then a name). -ENOENT when there is none. */
int store_key_by_id(struct store *s, int64_t id, struct store_key *out);
int store_key_by_name(struct store *s, const char *name, struct store_key *out);
int store_key_lookup(struct store *s, const char *id_or_name, struct store_key *out);
int store_key_by_hash(struct store *s, const unsigned char hash[STORE_HASH_LEN],
                      struct store_key *out);

/* Every key, revoked ones included, ordered by id. *out is malloc'd: the caller frees it. */
int store_key_list(struct store *s, struct store_key **out, size_t *n);

/* Marks key id revoked at now_ms. A key already revoked keeps its first revocation time and the
 * call returns 1; 0 when revoked now; -ENOENT when there is no such key. */
int store_key_revoke(struct store *s, int64_t id, int64_t now_ms);

/* ---- usage ---- */

/* One request's usage, as a worker fills it at the request's end and hands it to
 * store_writer_push (copied: the caller keeps its struct). Strings are NUL-terminated and cut to
 * fit; they must hold no secret (no query string, no header value). */
struct usage_record {
    int64_t ts_ms;         /* unix ms at the request's end */
    int64_t key_id;        /* relay key (struct key_entry.id); 0 = none (auth: none) */
    char upstream[64];     /* upstream name; "" = none chosen */
    int upstream_key;      /* index of the pool key used; -1 = none (the client's credentials) */
    char model[128];       /* "" = unknown */
    char path[256];        /* request path without the query string */
    int status;            /* what the client got; 0 = nothing */
    int64_t prompt_tokens; /* token counts: -1 = unknown */
    int64_t completion_tokens;
    int64_t cached_tokens;
    int64_t reasoning_tokens;
    int64_t total_tokens;
    int64_t bytes_in;   /* request body bytes from the client */
    int64_t bytes_out;  /* response bytes to the client */
    double ttfb_ms;     /* request head -> upstream response head; < 0 = none */
    double duration_ms; /* request head -> end */
    char end[16];       /* "ok", "client_closed", "upstream_error", "timeout", "rejected" */
    int partial;        /* 1: the body broke off, the counts are what was seen */
};

/* Inserts n records in one transaction (what the writer thread does with each batch). */
int store_usage_insert(struct store *s, const struct usage_record *r, size_t n);

/* Rows in usage (tests, diagnostics). */
int store_usage_count(struct store *s, int64_t *n);

/* What `ferry usage --by` groups on. */
enum store_dim { STORE_BY_KEY, STORE_BY_MODEL, STORE_BY_DAY, STORE_BY_UPSTREAM, STORE_BY_STATUS };
#define STORE_NDIMS 5
#define STORE_GROUP_MAX 128

/* Totals of one group. Unknown token counts (-1) add nothing. */
struct store_usage_total {
    char group[STORE_NDIMS][STORE_GROUP_MAX]; /* in the order of dims: key name ("-" none),
                                                 model, day (YYYY-MM-DD, UTC), upstream, status */
    int64_t requests;
    int64_t prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens;
    int64_t bytes_in, bytes_out;
    int64_t partial; /* requests whose body broke off */
};

/* Totals of the records with ts >= since_ms (0: all), grouped by dims (ndims 0: one row, the
 * grand total, even on an empty store), ordered by the groups. *out is malloc'd: the caller
 * frees it. */
int store_usage_totals(struct store *s, int64_t since_ms, const enum store_dim *dims, size_t ndims,
                       struct store_usage_total **out, size_t *n);

/* ---- the store thread ---- */

/* A key as the request path sees it. Lives as long as the keyring holding it. */
struct key_entry {
    int64_t id;
    const char *name;
    const char *const *models; /* globs (fnmatch); nmodels 0 = every model */
    size_t nmodels;
    const char *const *upstreams; /* upstream names; nupstreams 0 = every upstream */
    size_t nupstreams;
    int64_t expires_at; /* unix ms; 0 = never */
    int revoked;
    unsigned char hash[STORE_HASH_LEN];
};

/* An immutable snapshot of every key, shared by all threads, freed with its last reference. */
struct keyring;

/* The entry whose hash is hash (revoked and expired keys included: tell them apart with
 * key_entry_state), or NULL. Lock-free: the ring never changes once built. */
const struct key_entry *keyring_find(const struct keyring *ring,
                                     const unsigned char hash[STORE_HASH_LEN]);
size_t keyring_count(const struct keyring *ring);

/* Drops one reference taken by store_writer_keyring (any thread); NULL is accepted. */
void keyring_release(struct keyring *ring);

enum key_state { KEY_VALID, KEY_REVOKED, KEY_EXPIRED };
enum key_state key_entry_state(const struct key_entry *e, int64_t now_ms);

/* 1 when the key may be used for this model ("" or NULL: the request named none, allowed only
 * when the key has no model list) / this upstream name, else 0. */
int key_entry_allows_model(const struct key_entry *e, const char *model);
int key_entry_allows_upstream(const struct key_entry *e, const char *upstream);

struct store_writer;

struct store_writer_opts {
    size_t queue_max; /* records waiting to be written; more are dropped (default 65536) */
    unsigned poll_ms; /* how often PRAGMA data_version is checked (default 200) */
};

/* Opens path (creating it), loads the keys, and starts the store thread (with every signal
 * blocked, so SIGTERM/SIGINT stay with the main thread). On failure writes a message into err
 * and returns a negative code; nothing is left running. opts may be NULL (defaults). */
int store_writer_start(const char *path, struct store_writer **out, char *err, size_t errlen);
int store_writer_start_opts(const char *path, const struct store_writer_opts *opts,
                            struct store_writer **out, char *err, size_t errlen);

/* Queues a copy of *r for the store thread. Any thread; never waits on disk (a mutex held for a
 * copy). Returns 0, or -ENOBUFS when the queue is full: the record is dropped and counted, and
 * the store thread reports drops on stderr at most once a second. Not after store_writer_stop. */
int store_writer_push(struct store_writer *w, const struct usage_record *r);

/* The current key snapshot with a reference taken (never NULL): release it with
 * keyring_release. A key created or revoked by another process is visible here within
 * poll_ms plus the time to load the keys. */
struct keyring *store_writer_keyring(struct store_writer *w);

/* Records dropped because the queue was full, and records lost because the database refused
 * them (disk full, ...), since start. */
uint64_t store_writer_dropped(struct store_writer *w);
uint64_t store_writer_failed(struct store_writer *w);

/* Commits everything queued, stops and joins the thread, closes the connection and frees w.
 * Call once every thread that pushes has stopped pushing. Keyrings still referenced stay valid
 * until released. NULL is accepted. */
void store_writer_stop(struct store_writer *w);

#endif
