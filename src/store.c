/* store — SQLite access for relay keys and usage records, the store thread that commits usage in
 * batches, and the immutable key snapshot the request path reads (see store.h). SQLite result
 * codes stop here: everything above sees 0 or a negative errno. The full text of a key exists
 * only in store_key_create's output buffer; the database holds its SHA-256 and a short prefix. */
#include "store.h"

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "log.h"

#define BUSY_TIMEOUT_MS 5000
#define DEFAULT_QUEUE_MAX 65536
#define DEFAULT_POLL_MS 200
#define RETRY_MS 1000 /* a batch the database refused is tried again this much later */
#define DROP_REPORT_MS 1000

struct store {
    sqlite3 *db;
};

/* ---- errors ---- */

static int sql_code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE: return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return -EBUSY;
    case SQLITE_CONSTRAINT: return -EEXIST;
    case SQLITE_NOTFOUND: return -ENOENT;
    case SQLITE_NOMEM: return -ENOMEM;
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG: return -EINVAL;
    default: return -EIO;
    }
}

const char *store_errmsg(const struct store *s)
{
    return s && s->db ? sqlite3_errmsg(s->db) : "no database";
}

static int exec(struct store *s, const char *sql)
{
    return sql_code(sqlite3_exec(s->db, sql, NULL, NULL, NULL));
}

static int prepare(struct store *s, const char *sql, sqlite3_stmt **st)
{
    return sql_code(sqlite3_prepare_v2(s->db, sql, -1, st, NULL));
}

/* Runs a statement expected to return at most one integer; *v is left alone without a row. */
static int query_int(struct store *s, const char *sql, int64_t *v)
{
    sqlite3_stmt *st;
    int rc = prepare(s, sql, &st);

    if (rc != 0)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int64(st, 0);
    rc = sql_code(rc);
    sqlite3_finalize(st);
    return rc;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- keys: generation and hashing ---- */

int store_key_hash(const char *key, size_t len, unsigned char out[STORE_HASH_LEN])
{
    unsigned int n = 0;

    if (EVP_Digest(key, len, out, &n, EVP_sha256(), NULL) != 1 || n != STORE_HASH_LEN)
        return -EIO;
    return 0;
}

static int is_base62(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

int store_key_wellformed(const char *key, size_t len)
{
    if (len != STORE_KEY_LEN || memcmp(key, STORE_KEY_PREFIX, STORE_KEY_PREFIX_LEN) != 0)
        return 0;
    for (size_t i = STORE_KEY_PREFIX_LEN; i < len; i++)
        if (!is_base62((unsigned char)key[i]))
            return 0;
    return 1;
}

/* Fills out with n uniformly random base62 characters (rejection sampling: a byte below 248 =
 * 4 * 62 maps evenly onto the alphabet). */
static int random_base62(char *out, size_t n)
{
    static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    unsigned char buf[64];
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom(buf, sizeof(buf), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -EIO;
        for (ssize_t i = 0; i < r && got < n; i++)
            if (buf[i] < 248)
                out[got++] = alphabet[buf[i] % 62];
    }
    explicit_bzero(buf, sizeof(buf));
    return 0;
}

/* ---- schema ---- */

/* migrations[i] takes the schema from version i to i + 1. Never edit a shipped entry: append. */
static const char *const migrations[] = {
    "CREATE TABLE keys("
    " id INTEGER PRIMARY KEY,"
    " name TEXT UNIQUE NOT NULL,"
    " prefix TEXT NOT NULL,"
    " hash BLOB UNIQUE NOT NULL," /* SHA-256 of the full key */
    " models TEXT,"               /* comma list of globs; NULL = every model */
    " upstreams TEXT,"            /* comma list; NULL = every upstream */
    " created_at INTEGER,"        /* unix ms */
    " expires_at INTEGER,"        /* unix ms; NULL = never */
    " revoked_at INTEGER);"       /* unix ms; NULL = not revoked */
    "CREATE TABLE usage("
    " id INTEGER PRIMARY KEY,"
    " ts INTEGER,"     /* unix ms at the request's end */
    " key_id INTEGER," /* NULL = no relay key */
    " upstream TEXT,"
    " upstream_key INTEGER," /* index in the pool; -1 = none */
    " model TEXT,"
    " path TEXT,"
    " status INTEGER,"
    " prompt_tokens INTEGER," /* token counts: NULL = unknown */
    " completion_tokens INTEGER,"
    " cached_tokens INTEGER,"
    " reasoning_tokens INTEGER,"
    " total_tokens INTEGER,"
    " bytes_in INTEGER,"
    " bytes_out INTEGER,"
    " ttfb_ms REAL," /* NULL = no response head */
    " duration_ms REAL,"
    " \"end\" TEXT,"
    " partial INTEGER);"
    "CREATE INDEX usage_ts ON usage(ts);",
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))
_Static_assert(NMIGRATIONS == STORE_SCHEMA_VERSION, "one migration per schema version");

int store_schema_version(struct store *s, int *version)
{
    int64_t v = 0;
    int rc = query_int(s, "PRAGMA user_version", &v);

    *version = (int)v;
    return rc;
}

/* Brings the schema to STORE_SCHEMA_VERSION. The version is read again inside the write
 * transaction, so two processes opening a new store at once migrate it once. */
static int migrate(struct store *s, char *err, size_t errlen)
{
    int v = 0, rc;

    rc = store_schema_version(s, &v);
    if (rc == 0 && v == STORE_SCHEMA_VERSION)
        return 0;
    if (rc == 0)
        rc = exec(s, "BEGIN IMMEDIATE");
    if (rc != 0)
        goto fail;
    rc = store_schema_version(s, &v);
    if (rc == 0 && v > STORE_SCHEMA_VERSION) {
        exec(s, "ROLLBACK");
        snprintf(err, errlen, "schema version %d is newer than this ferry's (%d)", v,
                 STORE_SCHEMA_VERSION);
        return -EPROTO;
    }
    for (; rc == 0 && v < STORE_SCHEMA_VERSION; v++)
        rc = exec(s, migrations[v]);
    if (rc == 0) {
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
        rc = exec(s, sql);
    }
    if (rc == 0)
        rc = exec(s, "COMMIT");
    if (rc == 0)
        return 0;
    snprintf(err, errlen, "schema update failed: %s", sqlite3_errmsg(s->db));
    exec(s, "ROLLBACK");
    return rc;
fail:
    snprintf(err, errlen, "%s", sqlite3_errmsg(s->db));
    return rc;
}

int store_open(const char *path, int create, struct store **out, char *err, size_t errlen)
{
    char scratch[8];
    struct store *s;
    int rc, flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;

    *out = NULL;
    if (err == NULL) {
        err = scratch;
        errlen = sizeof(scratch);
    }
    if (!create && access(path, F_OK) != 0) {
        snprintf(err, errlen, "%s: no such store", path);
        return -ENOENT;
    }
    if (create)
        flags |= SQLITE_OPEN_CREATE;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    rc = sqlite3_open_v2(path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
        rc = -EIO;
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    /* WAL: readers (the CLI, the key reload) never block the writer, and a commit needs no
     * fsync with synchronous=NORMAL: a killed process loses nothing committed. */
    rc = exec(s, "PRAGMA journal_mode=WAL");
    if (rc == 0)
        rc = exec(s, "PRAGMA synchronous=NORMAL");
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    rc = migrate(s, err, errlen);
    if (rc != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    store_close(s);
    return rc;
}

void store_close(struct store *s)
{
    if (s == NULL)
        return;
    sqlite3_close_v2(s->db);
    free(s);
}

/* ---- keys: rows ---- */

/* A name is what the CLI and the usage report show: 1..64 of [A-Za-z0-9._@:+-], not all digits
 * (an all-digit argument is taken as an id), not starting with '-' (it would read as a flag). */
static int valid_name(const char *name)
{
    size_t n = strlen(name), digits = 0;

    if (n == 0 || n > STORE_NAME_MAX || name[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= '0' && c <= '9')
            digits++;
        else if (!is_base62(c) && !strchr("._@:+-", c))
            return 0;
    }
    return digits < n;
}

/* Normalises a comma list into out ("" for NULL or empty): items trimmed of blanks, none empty,
 * each of printable ASCII without blanks. */
static int normalise_list(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    const char *p = in;

    out[0] = '\0';
    if (in == NULL || *in == '\0')
        return 0;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0 || o + len + 2 > cap)
            return -EINVAL;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
                return -EINVAL;
        if (o > 0)
            out[o++] = ',';
        memcpy(out + o, p, len);
        o += len;
        out[o] = '\0';
        if (end == NULL)
            return 0;
        p = end + 1;
    }
}

#define KEY_COLUMNS "id, name, prefix, models, upstreams, created_at, expires_at, revoked_at"

static void copy_text(char *out, size_t cap, sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(out, cap, "%s", t ? (const char *)t : "");
}

static void key_from_row(sqlite3_stmt *st, struct store_key *k)
{
    memset(k, 0, sizeof(*k));
    k->id = sqlite3_column_int64(st, 0);
    copy_text(k->name, sizeof(k->name), st, 1);
    copy_text(k->prefix, sizeof(k->prefix), st, 2);
    copy_text(k->models, sizeof(k->models), st, 3);
    copy_text(k->upstreams, sizeof(k->upstreams), st, 4);
    k->created_at = sqlite3_column_int64(st, 5);
    k->expires_at = sqlite3_column_int64(st, 6); /* NULL reads as 0: never */
    k->revoked_at = sqlite3_column_int64(st, 7);
}

/* Runs a prepared key query and reads its one row; finalizes st. */
static int key_one(sqlite3_stmt *st, struct store_key *out)
{
    int rc = sqlite3_step(st);

    if (rc == SQLITE_ROW) {
        key_from_row(st, out);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : sql_code(rc);
    }
    sqlite3_finalize(st);
    return rc;
}

int store_key_by_id(struct store *s, int64_t id, struct store_key *out)
{
    sqlite3_stmt *st;
    int rc = prepare(s, "SELECT " KEY_COLUMNS " FROM keys WHERE id = ?1", &st);

    if (rc != 0)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    return key_one(st, out);
}

int store_key_by_name(struct store *s, const char *name, struct store_key *out)
{
    sqlite3_stmt *st;
    int rc = prepare(s, "SELECT " KEY_COLUMNS " FROM keys WHERE name = ?1", &st);

    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    return key_one(st, out);
}

int store_key_by_hash(struct store *s, const unsigned char hash[STORE_HASH_LEN],
                      struct store_key *out)
{
    sqlite3_stmt *st;
    int rc = prepare(s, "SELECT " KEY_COLUMNS " FROM keys WHERE hash = ?1", &st);

    if (rc != 0)
        return rc;
    sqlite3_bind_blob(st, 1, hash, STORE_HASH_LEN, SQLITE_TRANSIENT);
    return key_one(st, out);
}

int store_key_lookup(struct store *s, const char *id_or_name, struct store_key *out)
{
    size_t n = strlen(id_or_name);
    int rc;

    if (n > 0 && n <= 18 && strspn(id_or_name, "0123456789") == n) {
        rc = store_key_by_id(s, strtoll(id_or_name, NULL, 10), out);
        if (rc != -ENOENT)
            return rc;
    }
    return store_key_by_name(s, id_or_name, out);
}

int store_key_create(struct store *s, const char *name, const char *models, const char *upstreams,
                     int64_t expires_at, int64_t now_ms, char key_out[STORE_KEY_LEN + 1],
                     struct store_key *row)
{
    char m[STORE_LIST_MAX + 1], u[STORE_LIST_MAX + 1], prefix[32];
    unsigned char hash[STORE_HASH_LEN];
    sqlite3_stmt *st = NULL;
    int rc;

    key_out[0] = '\0';
    if (!valid_name(name) || normalise_list(models, m, sizeof(m)) != 0 ||
        normalise_list(upstreams, u, sizeof(u)) != 0 || expires_at < 0)
        return -EINVAL;
    memcpy(key_out, STORE_KEY_PREFIX, STORE_KEY_PREFIX_LEN);
    rc = random_base62(key_out + STORE_KEY_PREFIX_LEN, STORE_KEY_RANDOM_LEN);
    if (rc != 0)
        goto fail;
    key_out[STORE_KEY_LEN] = '\0';
    rc = store_key_hash(key_out, STORE_KEY_LEN, hash);
    if (rc != 0)
        goto fail;
    snprintf(prefix, sizeof(prefix), "%.*s\xe2\x80\xa6", STORE_KEY_PREFIX_LEN + 4, key_out);
    rc = prepare(s,
                 "INSERT INTO keys(name, prefix, hash, models, upstreams, created_at, expires_at)"
                 " VALUES(?1, ?2, ?3, NULLIF(?4, ''), NULLIF(?5, ''), ?6, NULLIF(?7, 0))",
                 &st);
    if (rc != 0)
        goto fail;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, prefix, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, hash, sizeof(hash), SQLITE_STATIC);
    sqlite3_bind_text(st, 4, m, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, u, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, now_ms);
    sqlite3_bind_int64(st, 7, expires_at);
    rc = sql_code(sqlite3_step(st));
    if (rc != 0)
        goto fail;
    sqlite3_finalize(st);
    st = NULL;
    if (row != NULL) {
        rc = store_key_by_id(s, sqlite3_last_insert_rowid(s->db), row);
        if (rc != 0)
            goto fail;
    }
    return 0;
fail:
    sqlite3_finalize(st);
    explicit_bzero(key_out, STORE_KEY_LEN + 1);
    return rc;
}

int store_key_list(struct store *s, struct store_key **out, size_t *n)
{
    struct store_key *v = NULL, *grown;
    size_t len = 0, cap = 0;
    sqlite3_stmt *st;
    int rc;

    *out = NULL;
    *n = 0;
    rc = prepare(s, "SELECT " KEY_COLUMNS " FROM keys ORDER BY id", &st);
    if (rc != 0)
        return rc;
    for (;;) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        if (len == cap) {
            cap = cap ? cap * 2 : 8;
            grown = realloc(v, cap * sizeof(*v));
            if (grown == NULL) {
                rc = SQLITE_NOMEM;
                break;
            }
            v = grown;
        }
        key_from_row(st, &v[len++]);
    }
    sqlite3_finalize(st);
    rc = sql_code(rc);
    if (rc != 0) {
        free(v);
        return rc;
    }
    *out = v;
    *n = len;
    return 0;
}

int store_key_revoke(struct store *s, int64_t id, int64_t now_ms)
{
    struct store_key k;
    sqlite3_stmt *st;
    int rc;

    rc = prepare(s, "UPDATE keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", &st);
    if (rc != 0)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now_ms);
    rc = sql_code(sqlite3_step(st));
    sqlite3_finalize(st);
    if (rc != 0)
        return rc;
    if (sqlite3_changes(s->db) > 0)
        return 0;
    rc = store_key_by_id(s, id, &k);
    return rc == 0 ? 1 : rc;
}

/* ---- usage ---- */

static void bind_count(sqlite3_stmt *st, int col, int64_t v)
{
    if (v < 0)
        sqlite3_bind_null(st, col);
    else
        sqlite3_bind_int64(st, col, v);
}

static void bind_opt_text(sqlite3_stmt *st, int col, const char *t, size_t cap)
{
    size_t len = strnlen(t, cap);

    if (len == 0)
        sqlite3_bind_null(st, col);
    else
        sqlite3_bind_text(st, col, t, (int)len, SQLITE_STATIC);
}

int store_usage_insert(struct store *s, const struct usage_record *r, size_t n)
{
    sqlite3_stmt *st = NULL;
    int rc;

    rc = exec(s, "BEGIN IMMEDIATE");
    if (rc != 0)
        return rc;
    rc = prepare(s,
                 "INSERT INTO usage(ts, key_id, upstream, upstream_key, model, path, status,"
                 " prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens,"
                 " bytes_in, bytes_out, ttfb_ms, duration_ms, \"end\", partial)"
                 " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,"
                 " ?17, ?18)",
                 &st);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct usage_record *u = &r[i];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, u->ts_ms);
        if (u->key_id > 0)
            sqlite3_bind_int64(st, 2, u->key_id);
        else
            sqlite3_bind_null(st, 2);
        bind_opt_text(st, 3, u->upstream, sizeof(u->upstream));
        sqlite3_bind_int(st, 4, u->upstream_key < 0 ? -1 : u->upstream_key);
        bind_opt_text(st, 5, u->model, sizeof(u->model));
        sqlite3_bind_text(st, 6, u->path, (int)strnlen(u->path, sizeof(u->path)), SQLITE_STATIC);
        sqlite3_bind_int(st, 7, u->status);
        bind_count(st, 8, u->prompt_tokens);
        bind_count(st, 9, u->completion_tokens);
        bind_count(st, 10, u->cached_tokens);
        bind_count(st, 11, u->reasoning_tokens);
        bind_count(st, 12, u->total_tokens);
        sqlite3_bind_int64(st, 13, u->bytes_in);
        sqlite3_bind_int64(st, 14, u->bytes_out);
        if (u->ttfb_ms < 0)
            sqlite3_bind_null(st, 15);
        else
            sqlite3_bind_double(st, 15, u->ttfb_ms);
        sqlite3_bind_double(st, 16, u->duration_ms);
        sqlite3_bind_text(st, 17, u->end, (int)strnlen(u->end, sizeof(u->end)), SQLITE_STATIC);
        sqlite3_bind_int(st, 18, u->partial ? 1 : 0);
        rc = sql_code(sqlite3_step(st));
    }
    sqlite3_finalize(st);
    if (rc == 0)
        rc = exec(s, "COMMIT");
    if (rc != 0)
        exec(s, "ROLLBACK");
    return rc;
}

int store_usage_count(struct store *s, int64_t *n)
{
    *n = 0;
    return query_int(s, "SELECT COUNT(*) FROM usage", n);
}

static const char *const dim_sql[STORE_NDIMS] = {
    [STORE_BY_KEY] = "COALESCE(k.name, IIF(u.key_id IS NULL, '-', '#' || u.key_id))",
    [STORE_BY_MODEL] = "COALESCE(u.model, '-')",
    [STORE_BY_DAY] = "strftime('%Y-%m-%d', u.ts / 1000, 'unixepoch')",
    [STORE_BY_UPSTREAM] = "COALESCE(u.upstream, '-')",
    [STORE_BY_STATUS] = "u.status",
};

int store_usage_totals(struct store *s, int64_t since_ms, const enum store_dim *dims, size_t ndims,
                       struct store_usage_total **out, size_t *n)
{
    char sql[2048], by[32] = "";
    size_t o, len = 0, cap = 0;
    struct store_usage_total *v = NULL, *grown;
    sqlite3_stmt *st;
    int rc;

    *out = NULL;
    *n = 0;
    if (ndims > STORE_NDIMS)
        return -EINVAL;
    o = (size_t)snprintf(sql, sizeof(sql), "SELECT ");
    for (size_t i = 0; i < ndims; i++) {
        if ((unsigned)dims[i] >= STORE_NDIMS)
            return -EINVAL;
        o += (size_t)snprintf(sql + o, sizeof(sql) - o, "%s, ", dim_sql[dims[i]]);
        snprintf(by + strlen(by), sizeof(by) - strlen(by), "%s%zu", i ? ", " : "", i + 1);
    }
    o += (size_t)snprintf(
        sql + o, sizeof(sql) - o,
        "COUNT(*), COALESCE(SUM(u.prompt_tokens), 0), COALESCE(SUM(u.completion_tokens), 0),"
        " COALESCE(SUM(u.cached_tokens), 0), COALESCE(SUM(u.reasoning_tokens), 0),"
        " COALESCE(SUM(u.total_tokens), 0), COALESCE(SUM(u.bytes_in), 0),"
        " COALESCE(SUM(u.bytes_out), 0), COALESCE(SUM(u.partial), 0)"
        " FROM usage u LEFT JOIN keys k ON k.id = u.key_id WHERE u.ts >= ?1");
    if (ndims > 0)
        snprintf(sql + o, sizeof(sql) - o, " GROUP BY %s ORDER BY %s", by, by);
    rc = prepare(s, sql, &st);
    if (rc != 0)
        return rc;
    sqlite3_bind_int64(st, 1, since_ms);
    for (;;) {
        struct store_usage_total *t;
        int c = (int)ndims;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            grown = realloc(v, cap * sizeof(*v));
            if (grown == NULL) {
                rc = SQLITE_NOMEM;
                break;
            }
            v = grown;
        }
        t = &v[len++];
        memset(t, 0, sizeof(*t));
        for (size_t i = 0; i < ndims; i++)
            copy_text(t->group[i], sizeof(t->group[i]), st, (int)i);
        t->requests = sqlite3_column_int64(st, c);
        t->prompt_tokens = sqlite3_column_int64(st, c + 1);
        t->completion_tokens = sqlite3_column_int64(st, c + 2);
        t->cached_tokens = sqlite3_column_int64(st, c + 3);
        t->reasoning_tokens = sqlite3_column_int64(st, c + 4);
        t->total_tokens = sqlite3_column_int64(st, c + 5);
        t->bytes_in = sqlite3_column_int64(st, c + 6);
        t->bytes_out = sqlite3_column_int64(st, c + 7);
        t->partial = sqlite3_column_int64(st, c + 8);
    }
    sqlite3_finalize(st);
    rc = sql_code(rc);
    if (rc != 0) {
        free(v);
        return rc;
    }
    *out = v;
    *n = len;
    return 0;
}

/* ---- the key snapshot ---- */

struct keyring {
    atomic_uint refs;
    size_t n;
    size_t mask;     /* slots - 1 (a power of two, at least twice n) */
    uint32_t *slots; /* entry index + 1; 0 = empty */
    struct key_entry *entries;
    void **blocks; /* per entry: one allocation holding its strings and arrays */
};

static size_t slot_of(const unsigned char hash[STORE_HASH_LEN], size_t mask)
{
    uint64_t h;
    memcpy(&h, hash, sizeof(h)); /* a SHA-256 is uniform already */
    return (size_t)h & mask;
}

const struct key_entry *keyring_find(const struct keyring *ring,
                                     const unsigned char hash[STORE_HASH_LEN])
{
    if (ring == NULL || ring->n == 0)
        return NULL;
    for (size_t i = slot_of(hash, ring->mask);; i = (i + 1) & ring->mask) {
        uint32_t e = ring->slots[i];
        if (e == 0)
            return NULL;
        if (memcmp(ring->entries[e - 1].hash, hash, STORE_HASH_LEN) == 0)
            return &ring->entries[e - 1];
    }
}

size_t keyring_count(const struct keyring *ring)
{
    return ring ? ring->n : 0;
}

static void keyring_free(struct keyring *ring)
{
    if (ring == NULL)
        return;
    for (size_t i = 0; ring->blocks && i < ring->n; i++)
        free(ring->blocks[i]);
    free(ring->blocks);
    free(ring->entries);
    free(ring->slots);
    free(ring);
}

void keyring_release(struct keyring *ring)
{
    if (ring != NULL && atomic_fetch_sub(&ring->refs, 1) == 1)
        keyring_free(ring);
}

enum key_state key_entry_state(const struct key_entry *e, int64_t now_ms)
{
    if (e->revoked)
        return KEY_REVOKED;
    if (e->expires_at > 0 && now_ms >= e->expires_at)
        return KEY_EXPIRED;
    return KEY_VALID;
}

int key_entry_allows_model(const struct key_entry *e, const char *model)
{
    if (e->nmodels == 0)
        return 1;
    for (size_t i = 0; model != NULL && *model && i < e->nmodels; i++)
        if (fnmatch(e->models[i], model, 0) == 0)
            return 1;
    return 0;
}

int key_entry_allows_upstream(const struct key_entry *e, const char *upstream)
{
    if (e->nupstreams == 0)
        return 1;
    for (size_t i = 0; upstream != NULL && i < e->nupstreams; i++)
        if (strcmp(e->upstreams[i], upstream) == 0)
            return 1;
    return 0;
}

static size_t count_items(const char *list)
{
    size_t n = *list ? 1 : 0;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    return n;
}

/* Splits the comma list at text (in place) into items[]. */
static void split_items(char *text, const char **items)
{
    size_t k = 0;

    if (*text == '\0')
        return;
    items[k++] = text;
    for (char *p = text; *p; p++)
        if (*p == ',') {
            *p = '\0';
            items[k++] = p + 1;
        }
}

/* Fills e from a row of (id, name, models, upstreams, expires_at, revoked_at, hash); its strings
 * and arrays go into one allocation returned in *block. */
static int entry_from_row(sqlite3_stmt *st, struct key_entry *e, void **block)
{
    const char *name = (const char *)sqlite3_column_text(st, 1);
    const char *models = (const char *)sqlite3_column_text(st, 2);
    const char *ups = (const char *)sqlite3_column_text(st, 3);
    const void *hash = sqlite3_column_blob(st, 6);
    size_t ln, lm, lu, nm, nu;
    const char **arr;
    char *text;

    if (name == NULL || hash == NULL || sqlite3_column_bytes(st, 6) != STORE_HASH_LEN)
        return -EIO;
    models = models ? models : "";
    ups = ups ? ups : "";
    ln = strlen(name) + 1;
    lm = strlen(models) + 1;
    lu = strlen(ups) + 1;
    nm = count_items(models);
    nu = count_items(ups);
    arr = malloc((nm + nu) * sizeof(*arr) + ln + lm + lu);
    if (arr == NULL)
        return -ENOMEM;
    text = (char *)(arr + nm + nu);
    memcpy(text, name, ln);
    memcpy(text + ln, models, lm);
    memcpy(text + ln + lm, ups, lu);
    split_items(text + ln, arr);
    split_items(text + ln + lm, arr + nm);
    memset(e, 0, sizeof(*e));
    e->id = sqlite3_column_int64(st, 0);
    e->name = text;
    e->models = arr;
    e->nmodels = nm;
    e->upstreams = arr + nm;
    e->nupstreams = nu;
    e->expires_at = sqlite3_column_int64(st, 4);
    e->revoked = sqlite3_column_type(st, 5) != SQLITE_NULL;
    memcpy(e->hash, hash, STORE_HASH_LEN);
    *block = arr;
    return 0;
}

/* Reads every key into a new keyring with one reference. */
static int keyring_load(struct store *s, struct keyring **out)
{
    struct keyring *ring;
    sqlite3_stmt *st = NULL;
    int64_t count = 0;
    size_t slots = 8;
    int rc, in_txn = 0;

    *out = NULL;
    ring = calloc(1, sizeof(*ring));
    if (ring == NULL)
        return -ENOMEM;
    atomic_init(&ring->refs, 1);
    /* One read transaction: the count and the rows agree. */
    rc = exec(s, "BEGIN");
    if (rc != 0)
        goto fail;
    in_txn = 1;
    rc = query_int(s, "SELECT COUNT(*) FROM keys", &count);
    if (rc != 0)
        goto fail;
    while (slots < (size_t)count * 2)
        slots *= 2;
    ring->mask = slots - 1;
    ring->slots = calloc(slots, sizeof(*ring->slots));
    ring->entries = calloc(count ? (size_t)count : 1, sizeof(*ring->entries));
    ring->blocks = calloc(count ? (size_t)count : 1, sizeof(*ring->blocks));
    if (ring->slots == NULL || ring->entries == NULL || ring->blocks == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = prepare(s,
                 "SELECT id, name, models, upstreams, expires_at, revoked_at, hash FROM keys"
                 " ORDER BY id",
                 &st);
    while (rc == 0 && ring->n < (size_t)count) {
        struct key_entry *e = &ring->entries[ring->n];
        size_t i;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
            rc = rc == SQLITE_DONE ? 0 : sql_code(rc);
            break;
        }
        rc = entry_from_row(st, e, &ring->blocks[ring->n]);
        if (rc != 0)
            break;
        ring->n++;
        for (i = slot_of(e->hash, ring->mask); ring->slots[i] != 0; i = (i + 1) & ring->mask)
            ;
        ring->slots[i] = (uint32_t)ring->n;
    }
    if (rc != 0)
        goto fail;
    sqlite3_finalize(st);
    exec(s, "COMMIT");
    *out = ring;
    return 0;
fail:
    sqlite3_finalize(st);
    if (in_txn)
        exec(s, "ROLLBACK");
    keyring_free(ring);
    return rc;
}

/* ---- the store thread ---- */

struct store_writer {
    struct store *db; /* used by the store thread only (after start) */
    pthread_t thread;
    size_t queue_max;
    unsigned poll_ms;

    pthread_mutex_t mu;         /* guards the fields down to ring_mu */
    pthread_cond_t wake;        /* a first record was queued, or stop */
    struct usage_record *queue; /* pushed, not yet taken by the thread */
    size_t nqueue, capqueue;
    int stopping;
    uint64_t dropped; /* queue full, since start */
    uint64_t failed;  /* refused by the database at stop, since start */

    pthread_mutex_t ring_mu; /* held only to copy the pointer and take a reference */
    struct keyring *ring;    /* current snapshot; the writer holds one reference */

    /* The store thread's own. */
    struct usage_record *batch; /* taken from queue, being written */
    size_t nbatch, capbatch;
    int64_t data_version;
    int64_t next_poll, retry_at, last_drop_report, last_fail_report;
    uint64_t drops_reported;
};

int store_writer_push(struct store_writer *w, const struct usage_record *r)
{
    int rc = 0, first;

    pthread_mutex_lock(&w->mu);
    first = w->nqueue == 0;
    if (w->nqueue == w->capqueue) {
        size_t cap = w->capqueue ? w->capqueue * 2 : 64;
        struct usage_record *grown;
        if (cap > w->queue_max)
            cap = w->queue_max;
        grown = cap > w->capqueue ? realloc(w->queue, cap * sizeof(*grown)) : NULL;
        if (grown == NULL) {
            w->dropped++;
            rc = -ENOBUFS;
            goto out;
        }
        w->queue = grown;
        w->capqueue = cap;
    }
    w->queue[w->nqueue] = *r;
    {
        struct usage_record *q = &w->queue[w->nqueue]; /* strings are terminated, whatever came */
        q->upstream[sizeof(q->upstream) - 1] = '\0';
        q->model[sizeof(q->model) - 1] = '\0';
        q->path[sizeof(q->path) - 1] = '\0';
        q->end[sizeof(q->end) - 1] = '\0';
    }
    w->nqueue++;
    if (first)
        pthread_cond_signal(&w->wake);
out:
    pthread_mutex_unlock(&w->mu);
    return rc;
}

struct keyring *store_writer_keyring(struct store_writer *w)
{
    struct keyring *r;

    pthread_mutex_lock(&w->ring_mu);
    r = w->ring;
    atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&w->ring_mu);
    return r;
}

uint64_t store_writer_dropped(struct store_writer *w)
{
    uint64_t n;
    pthread_mutex_lock(&w->mu);
    n = w->dropped;
    pthread_mutex_unlock(&w->mu);
    return n;
}

uint64_t store_writer_failed(struct store_writer *w)
{
    uint64_t n;
    pthread_mutex_lock(&w->mu);
    n = w->failed;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* Reloads the keys when another connection changed the database (or force). Store thread. */
static void refresh_keys(struct store_writer *w, int force)
{
    struct keyring *ring, *old;
    int64_t dv = -1;
    int rc;

    if (query_int(w->db, "PRAGMA data_version", &dv) != 0)
        return;
    if (!force && dv == w->data_version)
        return;
    rc = keyring_load(w->db, &ring);
    if (rc != 0) {
        log_error("store: reloading keys failed (%s); keeping the previous ones",
                  store_errmsg(w->db));
        return; /* data_version unchanged: tried again at the next poll */
    }
    w->data_version = dv;
    pthread_mutex_lock(&w->ring_mu);
    old = w->ring;
    w->ring = ring;
    pthread_mutex_unlock(&w->ring_mu);
    keyring_release(old);
}

/* Writes the batch; on failure keeps it to try again after RETRY_MS. Store thread, unlocked. */
static int write_batch(struct store_writer *w)
{
    int rc = store_usage_insert(w->db, w->batch, w->nbatch);
    int64_t now = mono_ms();

    if (rc == 0) {
        w->nbatch = 0;
        /* A burst grew the buffer: give the memory back. */
        if (w->capbatch > 4096) {
            free(w->batch);
            w->batch = NULL;
            w->capbatch = 0;
        }
        return 0;
    }
    w->retry_at = now + RETRY_MS;
    if (now - w->last_fail_report >= DROP_REPORT_MS) {
        log_error("store: writing %zu usage records failed (%s); retrying", w->nbatch,
                  store_errmsg(w->db));
        w->last_fail_report = now;
    }
    return rc;
}

static void report_drops(struct store_writer *w, int64_t now)
{
    if (w->dropped > w->drops_reported && now - w->last_drop_report >= DROP_REPORT_MS) {
        log_error("store: usage queue full (%zu records): %llu records dropped", w->queue_max,
                  (unsigned long long)(w->dropped - w->drops_reported));
        w->drops_reported = w->dropped;
        w->last_drop_report = now;
    }
}

static void deadline_ts(int64_t mono_deadline, struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    int64_t wait = mono_deadline - mono_ms();
    if (wait < 0)
        wait = 0;
    ts->tv_sec += wait / 1000;
    ts->tv_nsec += (wait % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* The loop: take whatever was queued, write it outside the lock (so pushes never wait on disk),
 * and between batches poll for key changes. Records that arrive while a batch is written form
 * the next one: batches grow with load, and a lone record waits for nothing. */
static void *writer_main(void *arg)
{
    struct store_writer *w = arg;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        int64_t now = mono_ms();
        int retry_wait = w->nbatch > 0 && now < w->retry_at;

        report_drops(w, now);
        if (now >= w->next_poll) {
            pthread_mutex_unlock(&w->mu);
            refresh_keys(w, 0);
            pthread_mutex_lock(&w->mu);
            w->next_poll = mono_ms() + w->poll_ms;
            continue;
        }
        if (w->nbatch == 0 && w->nqueue > 0) { /* swap: the queue becomes the batch */
            struct usage_record *q = w->queue;
            size_t cap = w->capqueue;
            w->queue = w->batch;
            w->capqueue = w->capbatch;
            w->batch = q;
            w->capbatch = cap;
            w->nbatch = w->nqueue;
            w->nqueue = 0;
        }
        if (w->nbatch > 0 && (!retry_wait || w->stopping)) {
            int rc;
            pthread_mutex_unlock(&w->mu);
            rc = write_batch(w);
            pthread_mutex_lock(&w->mu);
            if (rc != 0 && w->stopping) { /* one last try failed: count them and go on */
                log_error("store: %zu usage records lost at stop (%s)", w->nbatch,
                          store_errmsg(w->db));
                w->failed += w->nbatch;
                w->nbatch = 0;
            }
            continue;
        }
        if (w->stopping && w->nqueue == 0 && w->nbatch == 0)
            break;
        {
            struct timespec ts;
            int64_t until = w->next_poll;
            if (w->nbatch > 0 && w->retry_at < until)
                until = w->retry_at;
            if (w->dropped > w->drops_reported && w->last_drop_report + DROP_REPORT_MS < until)
                until = w->last_drop_report + DROP_REPORT_MS;
            deadline_ts(until, &ts);
            if (w->nqueue == 0 || w->nbatch > 0)
                pthread_cond_timedwait(&w->wake, &w->mu, &ts);
        }
    }
    report_drops(w, INT64_MAX / 2);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void writer_free(struct store_writer *w)
{
    keyring_release(w->ring);
    store_close(w->db);
    free(w->queue);
    free(w->batch);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->ring_mu);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

int store_writer_start(const char *path, struct store_writer **out, char *err, size_t errlen)
{
    return store_writer_start_opts(path, NULL, out, err, errlen);
}

int store_writer_start_opts(const char *path, const struct store_writer_opts *opts,
                            struct store_writer **out, char *err, size_t errlen)
{
    struct store_writer *w;
    pthread_condattr_t ca;
    sigset_t all, old;
    char scratch[8];
    int rc;

    *out = NULL;
    if (err == NULL) {
        err = scratch;
        errlen = sizeof(scratch);
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    w->queue_max = opts && opts->queue_max ? opts->queue_max : DEFAULT_QUEUE_MAX;
    w->poll_ms = opts && opts->poll_ms ? opts->poll_ms : DEFAULT_POLL_MS;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->ring_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &ca);
    pthread_condattr_destroy(&ca);
    rc = store_open(path, 1, &w->db, err, errlen);
    if (rc != 0)
        goto fail;
    rc = query_int(w->db, "PRAGMA data_version", &w->data_version);
    if (rc == 0)
        rc = keyring_load(w->db, &w->ring);
    if (rc != 0) {
        snprintf(err, errlen, "%s: loading keys: %s", path, store_errmsg(w->db));
        goto fail;
    }
    w->next_poll = mono_ms() + w->poll_ms;
    w->last_drop_report = w->last_fail_report = mono_ms() - DROP_REPORT_MS;
    /* The thread inherits the mask: SIGTERM and SIGINT must reach the main thread's sigwait. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = -pthread_create(&w->thread, NULL, writer_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the store thread: %s", strerror(-rc));
        goto fail;
    }
    *out = w;
    return 0;
fail:
    writer_free(w);
    return rc;
}

void store_writer_stop(struct store_writer *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    writer_free(w);
}
