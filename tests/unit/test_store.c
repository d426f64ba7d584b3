/* test_store — the SQLite store on real databases in a temporary directory: the schema and its
 * migration, keys (only the hash is stored, lookups, revocation, expiry, order), usage totals,
 * and the store thread's promises: a pushed record is committed within 100 ms (watched from a
 * second connection), a stop loses nothing, a full queue counts what it drops, and a key written
 * by another connection reaches the keyring within a second. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store.h"

struct fixture {
    char dir[64];
    char path[128];
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/ferry-test-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/ferry.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char p[160];
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};

    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static struct store *open_ok(const char *path)
{
    struct store *s = NULL;
    char err[256] = "";
    int rc = store_open(path, 1, &s, err, sizeof(err));
    if (rc != 0)
        fail_msg("store_open(%s): %d %s", path, rc, err);
    return s;
}

/* A plain SQLite connection, to look at what the store wrote as any other program would. */
static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -12345;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int64_t create_key(struct store *s, const char *name, const char *models,
                          const char *upstreams, int64_t expires_at, char key[STORE_KEY_LEN + 1])
{
    struct store_key row;
    char scratch[STORE_KEY_LEN + 1];
    int rc = store_key_create(s, name, models, upstreams, expires_at, 1700000000000,
                              key ? key : scratch, &row);
    assert_int_equal(rc, 0);
    return row.id;
}

/* ---- keys: hashing and shape ---- */

static void hash_and_shape(void **state)
{
    static const unsigned char abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                          0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                          0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
                                          0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    unsigned char h[32];
    (void)state;

    assert_int_equal(store_key_hash("abc", 3, h), 0);
    assert_memory_equal(h, abc, 32);
    assert_true(store_key_wellformed("sk-ferry-0123456789abcdefghijABCDEFGHIJklmnopqrst", 49));
    assert_false(store_key_wellformed("sk-ferry-0123456789abcdefghijABCDEFGHIJklmnopqrs", 48));
    assert_false(store_key_wellformed("sk-ferry-0123456789abcdefghijABCDEFGHIJklmnopqr_", 49));
    assert_false(store_key_wellformed("sk-proj--0123456789abcdefghijABCDEFGHIJklmnopqrst", 49));
}

/* ---- schema ---- */

static void schema_created_and_idempotent(void **state)
{
    struct fixture *f = *state;
    struct store *s;
    sqlite3 *db;
    int v = -1;

    s = open_ok(f->path);
    assert_int_equal(store_schema_version(s, &v), 0);
    assert_int_equal(v, STORE_SCHEMA_VERSION);
    create_key(s, "alice", NULL, NULL, 0, NULL);
    store_close(s);
    for (int i = 0; i < 3; i++) { /* reopening changes nothing and keeps the data */
        struct store_key k;
        s = open_ok(f->path);
        assert_int_equal(store_schema_version(s, &v), 0);
        assert_int_equal(v, STORE_SCHEMA_VERSION);
        assert_int_equal(store_key_by_name(s, "alice", &k), 0);
        store_close(s);
    }
    db = raw_open(f->path);
    assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND"
                                 " name IN ('keys', 'usage')"),
                     2);
    assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND"
                                 " name = 'usage_ts'"),
                     1);
    assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM keys"), 1);
    sqlite3_close(db);
}

static void schema_wal_and_refusals(void **state)
{
    struct fixture *f = *state;
    char missing[200], err[256];
    struct store *s = NULL;
    sqlite3 *db;

    snprintf(missing, sizeof(missing), "%s/missing.db", f->dir);
    assert_int_equal(store_open(missing, 0, &s, err, sizeof(err)), -ENOENT);
    assert_null(s);
    assert_int_not_equal(access(missing, F_OK), 0); /* not created by a read */

    s = open_ok(f->path);
    store_close(s);
    db = raw_open(f->path);
    {
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
        sqlite3_finalize(st);
    }
    /* A store written by a newer ferry is refused, not downgraded. */
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_open(f->path, 1, &s, err, sizeof(err)), -EPROTO);
    assert_non_null(strstr(err, "newer"));
    assert_null(s);
}

struct opener {
    const char *path;
    int rc;
};

static void *open_thread(void *arg)
{
    struct opener *o = arg;
    struct store *s = NULL;
    o->rc = store_open(o->path, 1, &s, NULL, 0);
    store_close(s);
    return NULL;
}

/* Several processes (here threads) opening a new store at once migrate it once. */
static void schema_concurrent_openers(void **state)
{
    struct fixture *f = *state;
    struct opener o[6];
    pthread_t t[6];
    struct store *s;
    int v = 0;

    for (int i = 0; i < 6; i++) {
        o[i].path = f->path;
        o[i].rc = 1;
        pthread_create(&t[i], NULL, open_thread, &o[i]);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(o[i].rc, 0);
    }
    s = open_ok(f->path);
    assert_int_equal(store_schema_version(s, &v), 0);
    assert_int_equal(v, STORE_SCHEMA_VERSION);
    store_close(s);
}

/* ---- keys ---- */

static int buffer_contains(const unsigned char *buf, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(buf + i, needle, n) == 0)
            return 1;
    return 0;
}

static int file_contains(const char *path, const char *needle)
{
    FILE *fp = fopen(path, "rb");
    unsigned char *buf;
    long len;
    int hit;

    if (fp == NULL)
        return 0;
    fseek(fp, 0, SEEK_END);
    len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = malloc(len > 0 ? (size_t)len : 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    hit = buffer_contains(buf, (size_t)len, needle);
    free(buf);
    return hit;
}

static void key_create_stores_hash_not_key(void **state)
{
    struct fixture *f = *state;
    char key[STORE_KEY_LEN + 1], p[160];
    unsigned char hash[32];
    struct store_key row, found;
    struct store *s = open_ok(f->path);
    sqlite3_stmt *st;
    sqlite3 *db;
    const char *secret;

    assert_int_equal(
        store_key_create(s, "alice", " gpt-4o* , o1", "openai", 0, 1700000000000, key, &row), 0);
    assert_int_equal(strlen(key), STORE_KEY_LEN);
    assert_true(store_key_wellformed(key, strlen(key)));
    secret = key + STORE_KEY_PREFIX_LEN;
    assert_string_equal(row.name, "alice");
    assert_string_equal(row.models, "gpt-4o*,o1"); /* normalised */
    assert_string_equal(row.upstreams, "openai");
    assert_int_equal(row.created_at, 1700000000000);
    assert_int_equal(row.expires_at, 0);
    assert_int_equal(row.revoked_at, 0);
    /* The display prefix: sk-ferry- + 4 characters + an ellipsis, nothing more of the key. */
    assert_int_equal(strncmp(row.prefix, key, STORE_KEY_PREFIX_LEN + 4), 0);
    assert_string_equal(row.prefix + STORE_KEY_PREFIX_LEN + 4, "\xe2\x80\xa6");

    /* The stored hash is SHA-256 of the full key, and found by it. */
    assert_int_equal(store_key_hash(key, strlen(key), hash), 0);
    assert_int_equal(store_key_by_hash(s, hash, &found), 0);
    assert_int_equal(found.id, row.id);
    hash[0] ^= 1;
    assert_int_equal(store_key_by_hash(s, hash, &found), -ENOENT);
    store_close(s);

    db = raw_open(f->path);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT hash, name, prefix, models, upstreams FROM keys",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    hash[0] ^= 1;
    assert_int_equal(sqlite3_column_bytes(st, 0), 32);
    assert_memory_equal(sqlite3_column_blob(st, 0), hash, 32);
    for (int c = 1; c < 5; c++) {
        const char *t = (const char *)sqlite3_column_text(st, c);
        assert_true(t == NULL || strstr(t, secret + 4) == NULL);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* Nor anywhere in the files: no part of the key past the displayed prefix. */
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, i ? "-wal" : "");
        assert_false(file_contains(p, secret + 4));
        for (size_t off = 4; off + 8 <= STORE_KEY_RANDOM_LEN; off += 4) {
            char piece[9];
            memcpy(piece, secret + off, 8);
            piece[8] = '\0';
            assert_false(file_contains(p, piece));
        }
    }
}

static void key_names_and_lists(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f->path);
    char key[STORE_KEY_LEN + 1];
    struct store_key k;
    static const char *const bad_names[] = {
        "",
        "123",
        "has space",
        "tab\t",
        "quote\"",
        "slash/x",
        "\xc3\xa9t\xc3\xa9",
        "-x",
        "--store",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};

    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
        assert_int_equal(store_key_create(s, bad_names[i], NULL, NULL, 0, 1, key, NULL), -EINVAL);
    assert_int_equal(store_key_create(s, "x", "a,,b", NULL, 0, 1, key, NULL), -EINVAL);
    assert_int_equal(store_key_create(s, "x", "a,", NULL, 0, 1, key, NULL), -EINVAL);
    assert_int_equal(store_key_create(s, "x", NULL, "a b", 0, 1, key, NULL), -EINVAL);
    assert_string_equal(key, ""); /* nothing handed out on failure */
    assert_int_equal(store_key_create(s, "bob-2.x@team:ci+1", "", "", 0, 1, key, &k), 0);
    assert_string_equal(k.models, "");
    assert_int_equal(store_key_create(s, "bob-2.x@team:ci+1", NULL, NULL, 0, 1, key, NULL),
                     -EEXIST);
    assert_string_equal(key, "");

    /* ID|NAME: an all-digit argument is an id first, then a name (never a valid name). */
    assert_int_equal(store_key_lookup(s, "1", &k), 0);
    assert_string_equal(k.name, "bob-2.x@team:ci+1");
    assert_int_equal(store_key_lookup(s, "bob-2.x@team:ci+1", &k), 0);
    assert_int_equal(k.id, 1);
    assert_int_equal(store_key_lookup(s, "2", &k), -ENOENT);
    assert_int_equal(store_key_lookup(s, "nobody", &k), -ENOENT);
    assert_int_equal(store_key_lookup(s, "99999999999999999999999", &k), -ENOENT);
    store_close(s);
}

static void key_revoke(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f->path);
    struct store_key k;
    int64_t id = create_key(s, "alice", NULL, NULL, 0, NULL);

    assert_int_equal(store_key_revoke(s, id, 1700000001000), 0);
    assert_int_equal(store_key_by_id(s, id, &k), 0);
    assert_int_equal(k.revoked_at, 1700000001000);
    /* Again: 1, and the first revocation time stays. */
    assert_int_equal(store_key_revoke(s, id, 1700000009000), 1);
    assert_int_equal(store_key_by_id(s, id, &k), 0);
    assert_int_equal(k.revoked_at, 1700000001000);
    assert_int_equal(store_key_revoke(s, id + 1, 1), -ENOENT);
    store_close(s);
}

static void key_list_order(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f->path);
    static const char *const names[] = {"zed", "alice", "mallory", "bob"};
    struct store_key *v;
    size_t n;

    assert_int_equal(store_key_list(s, &v, &n), 0);
    assert_int_equal(n, 0);
    free(v);
    for (int i = 0; i < 4; i++)
        create_key(s, names[i], NULL, NULL, 0, NULL);
    assert_int_equal(store_key_revoke(s, 3, 1700000005000), 0);
    assert_int_equal(store_key_list(s, &v, &n), 0);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) { /* by id, which is creation order; revoked ones listed */
        assert_int_equal(v[i].id, (int64_t)i + 1);
        assert_string_equal(v[i].name, names[i]);
        assert_int_equal(v[i].revoked_at, i == 2 ? 1700000005000 : 0);
    }
    free(v);
    store_close(s);
}

/* ---- the keyring ---- */

static struct store_writer *writer_ok(const char *path, const struct store_writer_opts *o)
{
    struct store_writer *w = NULL;
    char err[256] = "";
    int rc = store_writer_start_opts(path, o, &w, err, sizeof(err));
    if (rc != 0)
        fail_msg("store_writer_start(%s): %d %s", path, rc, err);
    return w;
}

static void keyring_entries(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f->path);
    char ka[STORE_KEY_LEN + 1], kb[STORE_KEY_LEN + 1], kc[STORE_KEY_LEN + 1];
    unsigned char h[32];
    const struct key_entry *e;
    struct store_writer *w;
    struct keyring *ring;

    create_key(s, "alice", "gpt-4o*,o1", "openai,deepseek", 0, ka);
    create_key(s, "bob", NULL, NULL, 1700000060000, kb);
    create_key(s, "carol", NULL, NULL, 0, kc);
    assert_int_equal(store_key_revoke(s, 3, 1700000001000), 0);
    for (int i = 0; i < 200; i++) { /* enough to make the table probe */
        char name[32];
        snprintf(name, sizeof(name), "bulk%d", i);
        create_key(s, name, NULL, NULL, 0, NULL);
    }
    store_close(s);

    w = writer_ok(f->path, NULL);
    ring = store_writer_keyring(w);
    assert_int_equal(keyring_count(ring), 203);

    assert_int_equal(store_key_hash(ka, strlen(ka), h), 0);
    e = keyring_find(ring, h);
    assert_non_null(e);
    assert_int_equal(e->id, 1);
    assert_string_equal(e->name, "alice");
    assert_int_equal(e->nmodels, 2);
    assert_string_equal(e->models[0], "gpt-4o*");
    assert_string_equal(e->models[1], "o1");
    assert_int_equal(e->nupstreams, 2);
    assert_string_equal(e->upstreams[1], "deepseek");
    assert_int_equal(key_entry_state(e, 1800000000000), KEY_VALID);
    assert_true(key_entry_allows_model(e, "gpt-4o-mini"));
    assert_true(key_entry_allows_model(e, "o1"));
    assert_false(key_entry_allows_model(e, "o1-mini"));
    assert_false(key_entry_allows_model(e, ""));
    assert_false(key_entry_allows_model(e, NULL));
    assert_true(key_entry_allows_upstream(e, "deepseek"));
    assert_false(key_entry_allows_upstream(e, "deep"));

    assert_int_equal(store_key_hash(kb, strlen(kb), h), 0);
    e = keyring_find(ring, h);
    assert_non_null(e);
    assert_string_equal(e->name, "bob");
    assert_int_equal(e->nmodels, 0);
    assert_true(key_entry_allows_model(e, "anything"));
    assert_true(key_entry_allows_model(e, NULL));
    assert_true(key_entry_allows_upstream(e, "x"));
    /* Expiry: valid until expires_at, expired from it on. */
    assert_int_equal(key_entry_state(e, 1700000059999), KEY_VALID);
    assert_int_equal(key_entry_state(e, 1700000060000), KEY_EXPIRED);

    assert_int_equal(store_key_hash(kc, strlen(kc), h), 0);
    e = keyring_find(ring, h);
    assert_non_null(e);
    assert_int_equal(key_entry_state(e, 1700000000000), KEY_REVOKED);

    h[31] ^= 0x80;
    assert_null(keyring_find(ring, h));
    assert_int_equal(store_key_hash("sk-ferry-nope", 13, h), 0);
    assert_null(keyring_find(ring, h));

    /* A reference outlives the writer. */
    store_writer_stop(w);
    assert_int_equal(store_key_hash(ka, strlen(ka), h), 0);
    assert_non_null(keyring_find(ring, h));
    keyring_release(ring);
}

static const struct key_entry *find_now(struct store_writer *w, const char *key, int *revoked)
{
    unsigned char h[32];
    struct keyring *ring = store_writer_keyring(w);
    const struct key_entry *e;

    assert_int_equal(store_key_hash(key, strlen(key), h), 0);
    e = keyring_find(ring, h);
    *revoked = e ? e->revoked : -1;
    keyring_release(ring); /* e is not used past here: only whether it was there */
    return e;
}

/* Another connection (the CLI) creates and revokes a key: the writer's keyring follows within
 * one second. */
static void keyring_follows_other_connection(void **state)
{
    struct fixture *f = *state;
    struct store_writer *w = writer_ok(f->path, NULL);
    struct store *cli = open_ok(f->path);
    char key[STORE_KEY_LEN + 1];
    int64_t t0, id, elapsed;
    int revoked = -1;

    assert_null(find_now(w, "sk-ferry-x", &revoked));
    for (int round = 0; round < 3; round++) {
        char name[16];
        snprintf(name, sizeof(name), "k%d", round);
        id = create_key(cli, name, NULL, NULL, 0, key);
        t0 = mono_ms();
        while (find_now(w, key, &revoked) == NULL && mono_ms() - t0 < 3000)
            sleep_ms(5);
        elapsed = mono_ms() - t0;
        print_message("key created by another connection seen after %lld ms\n", (long long)elapsed);
        assert_non_null(find_now(w, key, &revoked));
        assert_int_equal(revoked, 0);
        assert_true(elapsed < 1000);

        assert_int_equal(store_key_revoke(cli, id, 1700000000000), 0);
        t0 = mono_ms();
        for (;;) {
            find_now(w, key, &revoked);
            if (revoked == 1 || mono_ms() - t0 >= 3000)
                break;
            sleep_ms(5);
        }
        elapsed = mono_ms() - t0;
        print_message("revocation seen after %lld ms\n", (long long)elapsed);
        assert_int_equal(revoked, 1);
        assert_true(elapsed < 1000);
    }
    store_close(cli);
    store_writer_stop(w);
}

/* ---- usage ---- */

static void record(struct usage_record *r, int64_t ts, int64_t key_id, const char *model,
                   int64_t prompt, int64_t completion)
{
    memset(r, 0, sizeof(*r));
    r->ts_ms = ts;
    r->key_id = key_id;
    snprintf(r->upstream, sizeof(r->upstream), "%s", key_id ? "openai" : "");
    r->upstream_key = key_id ? 0 : -1;
    snprintf(r->model, sizeof(r->model), "%s", model);
    snprintf(r->path, sizeof(r->path), "/v1/chat/completions");
    r->status = 200;
    r->prompt_tokens = prompt;
    r->completion_tokens = completion;
    r->cached_tokens = -1;
    r->reasoning_tokens = -1;
    r->total_tokens = prompt >= 0 && completion >= 0 ? prompt + completion : -1;
    r->bytes_in = 100;
    r->bytes_out = 1000;
    r->ttfb_ms = -1;
    r->duration_ms = 12.5;
    snprintf(r->end, sizeof(r->end), "ok");
}

static void usage_totals(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f->path);
    struct usage_record r[5];
    struct store_usage_total *t;
    enum store_dim by_key_model[] = {STORE_BY_KEY, STORE_BY_MODEL};
    enum store_dim by_day[] = {STORE_BY_DAY}, by_status[] = {STORE_BY_STATUS};
    const int64_t day1 = 1700000000000, day2 = day1 + 86400000; /* 2023-11-14, -15 */
    size_t n;
    int64_t count;

    /* An empty store: one row of zeros without groups, no rows with them. */
    assert_int_equal(store_usage_totals(s, 0, NULL, 0, &t, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(t[0].requests, 0);
    assert_int_equal(t[0].total_tokens, 0);
    free(t);
    assert_int_equal(store_usage_totals(s, 0, by_day, 1, &t, &n), 0);
    assert_int_equal(n, 0);
    free(t);

    create_key(s, "alice", NULL, NULL, 0, NULL);
    record(&r[0], day1, 1, "gpt-4o", 10, 5);
    record(&r[1], day1 + 1, 1, "gpt-4o", 20, -1); /* completion unknown: adds nothing */
    record(&r[2], day2, 1, "o1", 7, 3);
    r[2].reasoning_tokens = 2;
    r[2].cached_tokens = 4;
    r[2].partial = 1;
    record(&r[3], day2 + 1, 0, "", -1, -1); /* no key, no model, nothing known */
    r[3].status = 401;
    snprintf(r[3].end, sizeof(r[3].end), "rejected");
    record(&r[4], day2 + 2, 9, "gpt-4o", 1, 1); /* a key id with no row */
    assert_int_equal(store_usage_insert(s, r, 5), 0);
    assert_int_equal(store_usage_count(s, &count), 0);
    assert_int_equal(count, 5);

    assert_int_equal(store_usage_totals(s, 0, NULL, 0, &t, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(t[0].requests, 5);
    assert_int_equal(t[0].prompt_tokens, 38);
    assert_int_equal(t[0].completion_tokens, 9);
    assert_int_equal(t[0].total_tokens, 15 + 10 + 2);
    assert_int_equal(t[0].cached_tokens, 4);
    assert_int_equal(t[0].reasoning_tokens, 2);
    assert_int_equal(t[0].bytes_in, 500);
    assert_int_equal(t[0].bytes_out, 5000);
    assert_int_equal(t[0].partial, 1);
    free(t);

    assert_int_equal(store_usage_totals(s, 0, by_key_model, 2, &t, &n), 0);
    assert_int_equal(n, 4); /* "#9"/gpt-4o, "-"/"-", alice/gpt-4o, alice/o1 */
    assert_string_equal(t[0].group[0], "#9");
    assert_string_equal(t[1].group[0], "-");
    assert_string_equal(t[1].group[1], "-");
    assert_string_equal(t[2].group[0], "alice");
    assert_string_equal(t[2].group[1], "gpt-4o");
    assert_int_equal(t[2].requests, 2);
    assert_int_equal(t[2].prompt_tokens, 30);
    assert_int_equal(t[2].completion_tokens, 5);
    assert_string_equal(t[3].group[1], "o1");
    assert_int_equal(t[3].partial, 1);
    free(t);

    assert_int_equal(store_usage_totals(s, 0, by_day, 1, &t, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(t[0].group[0], "2023-11-14");
    assert_int_equal(t[0].requests, 2);
    assert_string_equal(t[1].group[0], "2023-11-15");
    assert_int_equal(t[1].requests, 3);
    free(t);

    assert_int_equal(store_usage_totals(s, day2, by_status, 1, &t, &n), 0); /* since: inclusive */
    assert_int_equal(n, 2);
    assert_string_equal(t[0].group[0], "200");
    assert_int_equal(t[0].requests, 2);
    assert_string_equal(t[1].group[0], "401");
    assert_int_equal(t[1].requests, 1);
    free(t);
    store_close(s);
}

/* ---- the store thread ---- */

/* Each record pushed alone is visible to another connection within 100 ms. */
static void writer_commits_within_100ms(void **state)
{
    struct fixture *f = *state;
    struct store_writer *w = writer_ok(f->path, NULL);
    struct store *reader = open_ok(f->path);
    struct usage_record r;
    int64_t worst = 0;

    for (int i = 1; i <= 20; i++) {
        int64_t t0, n = 0, elapsed;
        record(&r, 1700000000000 + i, 0, "gpt-4o", 1, 1);
        t0 = mono_ms();
        assert_int_equal(store_writer_push(w, &r), 0);
        while (mono_ms() - t0 < 2000) {
            assert_int_equal(store_usage_count(reader, &n), 0);
            if (n == i)
                break;
            sleep_ms(1);
        }
        elapsed = mono_ms() - t0;
        assert_int_equal(n, i);
        if (elapsed > worst)
            worst = elapsed;
        sleep_ms(i % 5 * 20); /* land at different points of the thread's cycle */
    }
    print_message("worst push-to-visible delay over 20 records: %lld ms\n", (long long)worst);
    assert_true(worst < 100);
    store_close(reader);
    store_writer_stop(w);
}

struct pusher {
    struct store_writer *w;
    int base, n;
};

static void *push_thread(void *arg)
{
    struct pusher *p = arg;
    struct usage_record r;
    for (int i = 0; i < p->n; i++) {
        record(&r, 1700000000000 + p->base + i, 0, "m", 1, 2);
        if (store_writer_push(p->w, &r) != 0)
            break;
    }
    return NULL;
}

/* 10000 records from 4 threads, then stop at once: every one is in the database. */
static void writer_stop_loses_nothing(void **state)
{
    struct fixture *f = *state;
    struct store_writer *w = writer_ok(f->path, NULL);
    struct pusher p[4];
    pthread_t t[4];
    struct store *s;
    struct store_usage_total *tot;
    size_t n;
    int64_t count = 0;

    for (int i = 0; i < 4; i++) {
        p[i] = (struct pusher){w, i * 2500, 2500};
        pthread_create(&t[i], NULL, push_thread, &p[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(store_writer_dropped(w), 0);
    store_writer_stop(w);

    s = open_ok(f->path);
    assert_int_equal(store_usage_count(s, &count), 0);
    assert_int_equal(count, 10000);
    assert_int_equal(store_usage_totals(s, 0, NULL, 0, &tot, &n), 0);
    assert_int_equal(tot[0].total_tokens, 30000);
    free(tot);
    store_close(s);
}

/* While another connection holds the write lock, the queue (16 here) fills and the rest is
 * dropped and counted; once the lock goes, what was queued is written: pushed = rows + dropped. */
static void writer_queue_full_drops(void **state)
{
    struct fixture *f = *state;
    struct store_writer_opts o = {.queue_max = 16};
    struct store_writer *w = writer_ok(f->path, &o);
    struct usage_record r;
    sqlite3 *blocker = raw_open(f->path);
    int refused = 0;
    int64_t count = 0;
    struct store *s;

    assert_int_equal(sqlite3_exec(blocker, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < 1000; i++) {
        record(&r, 1700000000000 + i, 0, "m", 1, 1);
        if (store_writer_push(w, &r) == -ENOBUFS)
            refused++;
        if (i == 0)
            sleep_ms(50); /* let the thread take the first record and block on the lock */
    }
    assert_int_equal(store_writer_dropped(w), (uint64_t)refused);
    assert_true(refused >= 1000 - 2 * 16);
    sleep_ms(100);
    assert_int_equal(sqlite3_exec(blocker, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(blocker);
    store_writer_stop(w);

    s = open_ok(f->path);
    assert_int_equal(store_usage_count(s, &count), 0);
    assert_int_equal(count + refused, 1000);
    assert_true(count >= 1);
    store_close(s);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hash_and_shape),
        T(schema_created_and_idempotent),
        T(schema_wal_and_refusals),
        T(schema_concurrent_openers),
        T(key_create_stores_hash_not_key),
        T(key_names_and_lists),
        T(key_revoke),
        T(key_list_order),
        T(keyring_entries),
        T(keyring_follows_other_connection),
        T(usage_totals),
        T(writer_commits_within_100ms),
        T(writer_stop_loses_nothing),
        T(writer_queue_full_drops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
