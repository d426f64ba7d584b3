/* cli — `ferry keys ...` and `ferry usage`: the store's command line (see cli.h). Output goes
 * to stdout (a table, or JSON with --json), notes and errors to stderr. The only secret ever
 * printed is the new key from `keys create`, alone on stdout, once. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "store.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* The flags of every subcommand that take a value: their values are never settings options. */
static const char *const value_flags[] = {"--name",    "--models", "--upstreams",
                                          "--expires", "--since",  "--by"};

int cli_is_command(const char *arg)
{
    return strcmp(arg, "keys") == 0 || strcmp(arg, "usage") == 0;
}

static int takes_value(const char *arg)
{
    for (size_t i = 0; i < sizeof(value_flags) / sizeof(value_flags[0]); i++)
        if (strcmp(arg, value_flags[i]) == 0)
            return 1;
    return 0;
}

int cli_split_args(int argc, char **argv)
{
    char **settings = malloc((size_t)argc * sizeof(*settings));
    char **own = malloc((size_t)argc * sizeof(*own));
    int ns = 0, no = 0, rc = -ENOMEM;

    if (settings == NULL || own == NULL)
        goto out;
    own[no++] = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 || strcmp(a, "--store") == 0) &&
            i + 1 < argc) {
            settings[ns++] = argv[i];
            settings[ns++] = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0 || strncmp(a, "--store=", 8) == 0) {
            settings[ns++] = argv[i];
        } else if (takes_value(a) && i + 1 < argc) {
            own[no++] = argv[i];
            own[no++] = argv[++i];
        } else {
            own[no++] = argv[i];
        }
    }
    memcpy(argv + 1, settings, (size_t)ns * sizeof(*argv));
    memcpy(argv + 1 + ns, own, (size_t)no * sizeof(*argv));
    rc = 1 + ns;
out:
    free(settings);
    free(own);
    return rc;
}

/* ---- small helpers ---- */

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* "2025-01-02T03:04:05.678Z" (iso) or "2025-01-02 03:04" (for tables), UTC. */
static const char *fmt_time(char *out, size_t cap, int64_t ms, int iso)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    size_t n;

    gmtime_r(&t, &tm);
    n = strftime(out, cap, iso ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M", &tm);
    if (iso)
        snprintf(out + n, cap - n, ".%03dZ", (int)(ms % 1000));
    return out;
}

/* "30d", "12h", "90m", "45s", "2w" -> milliseconds. */
static int parse_span(const char *s, int64_t *ms)
{
    char *end;
    long long n;
    int64_t unit;

    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    n = strtoll(s, &end, 10);
    if (errno != 0 || n <= 0 || end[0] == '\0' || end[1] != '\0')
        return -EINVAL;
    switch (*end) {
    case 's': unit = 1000; break;
    case 'm': unit = 60 * 1000; break;
    case 'h': unit = 3600 * 1000; break;
    case 'd': unit = 86400 * 1000; break;
    case 'w': unit = 7 * 86400 * 1000; break;
    default: return -EINVAL;
    }
    if (n > INT64_MAX / unit / 2)
        return -EINVAL;
    *ms = n * unit;
    return 0;
}

/* "YYYY-MM-DD" (00:00 UTC) or "YYYY-MM-DDTHH:MM[:SS]" with an optional "Z" or "+HH:MM" /
 * "-HH:MM" (UTC without one) -> unix ms. */
static int parse_iso(const char *s, int64_t *ms)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, off = 0, used = 0;
    struct tm tm;
    const char *p;
    time_t t;

    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10)
        return -EINVAL;
    p = s + used;
    if (*p == 'T' || *p == ' ') {
        used = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &used) != 2 || used != 5)
            return -EINVAL;
        p += 1 + used;
        if (*p == ':') {
            used = 0;
            if (sscanf(p + 1, "%2d%n", &sec, &used) != 1 || used != 2)
                return -EINVAL;
            p += 1 + used;
        }
        if (*p == 'Z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int oh, om;
            used = 0;
            if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &used) != 2 || used != 5 || oh > 23 || om > 59)
                return -EINVAL;
            off = (oh * 60 + om) * 60 * (*p == '+' ? 1 : -1);
            p += 1 + used;
        }
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 ||
        y < 1970)
        return -EINVAL;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    t = timegm(&tm);
    if (t == (time_t)-1 || tm.tm_mday != d) /* timegm normalises Feb 30 into March */
        return -EINVAL;
    *ms = ((int64_t)t - off) * 1000;
    return 0;
}

/* Display width of UTF-8 text (one column per code point: enough for what we print). */
static int text_width(const char *s)
{
    int w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

static void pad(const char *s, int width, int last)
{
    fputs(s, stdout);
    if (!last)
        for (int w = text_width(s); w < width + 2; w++)
            putchar(' ');
}

/* A JSON string; bytes that are not valid UTF-8 become U+FFFD. */
static void json_str(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    putchar('"');
    while (*p) {
        unsigned char c = *p;
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        size_t k = 1;
        while (k < n && (p[k] & 0xc0) == 0x80)
            k++;
        if (n == 0 || k < n) {
            fputs("\\ufffd", stdout);
            p += k;
            continue;
        }
        if (n > 1) {
            fwrite(p, 1, n, stdout);
        } else if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
        p += n;
    }
    putchar('"');
}

/* A comma list as a JSON array, or null when empty. */
static void json_list(const char *list)
{
    if (*list == '\0') {
        fputs("null", stdout);
        return;
    }
    putchar('[');
    for (const char *p = list;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[STORE_LIST_MAX + 1];
        memcpy(item, p, len);
        item[len] = '\0';
        json_str(item);
        if (end == NULL)
            break;
        putchar(',');
        p = end + 1;
    }
    putchar(']');
}

static void json_time(int64_t ms)
{
    char buf[40];
    if (ms == 0)
        fputs("null", stdout);
    else
        printf("\"%s\"", fmt_time(buf, sizeof(buf), ms, 1));
}

/* ---- flags ---- */

struct flag {
    const char *name;   /* "--name" */
    const char **value; /* takes a value: where it goes */
    int *set;           /* takes none: set to 1 */
};

/* Parses argv (after the subcommand words) against flags; positional arguments go to pos.
 * Returns 0, 1 when --help was asked, -1 after printing an error. */
static int parse_flags(const char *cmd, int argc, char **argv, const struct flag *flags,
                       size_t nflags, const char **pos, size_t maxpos, size_t *npos)
{
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *eq;
        const struct flag *f = NULL;
        size_t len;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return 1;
        if (a[0] != '-' || a[1] == '\0') {
            if (*npos == maxpos) {
                fprintf(stderr, "ferry %s: unexpected argument '%s'\n", cmd, a);
                return -1;
            }
            pos[(*npos)++] = a;
            continue;
        }
        eq = strchr(a, '=');
        len = eq ? (size_t)(eq - a) : strlen(a);
        for (size_t k = 0; k < nflags && f == NULL; k++)
            if (strlen(flags[k].name) == len && memcmp(flags[k].name, a, len) == 0)
                f = &flags[k];
        if (f == NULL) {
            fprintf(stderr, "ferry %s: unknown option '%.*s' (see ferry %s --help)\n", cmd,
                    (int)len, a, cmd);
            return -1;
        }
        if (f->set != NULL) {
            if (eq != NULL) {
                fprintf(stderr, "ferry %s: %s takes no value\n", cmd, f->name);
                return -1;
            }
            *f->set = 1;
            continue;
        }
        if (eq == NULL && i + 1 >= argc) {
            fprintf(stderr, "ferry %s: %s needs a value\n", cmd, f->name);
            return -1;
        }
        *f->value = eq ? eq + 1 : argv[++i];
    }
    return 0;
}

static void keys_help(FILE *f)
{
    fprintf(
        f,
        "usage: ferry keys create --name NAME [--models a,b] [--upstreams x,y] [--expires T]\n"
        "       ferry keys list [--json]\n"
        "       ferry keys show ID|NAME [--json]\n"
        "       ferry keys revoke ID|NAME\n"
        "\n"
        "Relay-issued keys for `auth: keys`. `create` prints the new key alone on stdout, once:\n"
        "the store keeps only its SHA-256 and a display prefix. --models takes globs\n"
        "(gpt-4o*), --upstreams upstream names; without them the key may use any. --expires\n"
        "takes a span (30d, 12h, 90m, 2w) or a UTC date/time (2025-12-31, 2025-12-31T18:00Z).\n"
        "A change takes effect in a running ferry within a second. Revoked keys stay listed.\n"
        "\n"
        "Every subcommand reads -c FILE and --store PATH (default ./ferry.db), as ferry does.\n");
}

static void usage_help(FILE *f)
{
    fprintf(f,
            "usage: ferry usage [--since T] [--by key,model,day,upstream,status] [--json]\n"
            "\n"
            "Totals of the recorded requests: requests, prompt, completion, cached, reasoning and\n"
            "total tokens, bytes in and out, and how many broke off (partial), since T (a span\n"
            "back from now: 24h, 7d; or a UTC date/time: 2025-01-31), grouped by the dimensions\n"
            "given (days are UTC). Without --since: all of them.\n"
            "\n"
            "Reads -c FILE and --store PATH (default ./ferry.db), as ferry does.\n");
}

/* Opens the store named by the settings; a missing one is created only when create is set. */
static int open_store(const struct config *cfg, int create, struct store **s)
{
    char err[1200];
    int rc = store_open(cfg->store, create, s, err, sizeof(err));

    if (rc == -ENOENT)
        fprintf(stderr,
                "ferry: no store at %s (ferry creates it when it starts, and so does "
                "`ferry keys create`; choose it with --store PATH or -c FILE)\n",
                cfg->store);
    else if (rc != 0)
        fprintf(stderr, "ferry: store %s: %s\n", cfg->store, err);
    return rc;
}

/* ---- keys ---- */

static const char *key_status(const struct store_key *k, int64_t now)
{
    if (k->revoked_at)
        return "revoked";
    if (k->expires_at && now >= k->expires_at)
        return "expired";
    return "active";
}

static void key_json(const struct store_key *k, int64_t now)
{
    printf("{\"id\":%lld,\"name\":", (long long)k->id);
    json_str(k->name);
    fputs(",\"prefix\":", stdout);
    json_str(k->prefix);
    fputs(",\"models\":", stdout);
    json_list(k->models);
    fputs(",\"upstreams\":", stdout);
    json_list(k->upstreams);
    fputs(",\"created_at\":", stdout);
    json_time(k->created_at);
    fputs(",\"expires_at\":", stdout);
    json_time(k->expires_at);
    fputs(",\"revoked_at\":", stdout);
    json_time(k->revoked_at);
    printf(",\"status\":\"%s\"}", key_status(k, now));
}

/* Every upstream in the comma list must be one the configuration knows. */
static int check_upstreams(const struct config *cfg, const char *list)
{
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p), i;
        while (len > 0 && *p == ' ') {
            p++;
            len--;
        }
        while (len > 0 && p[len - 1] == ' ')
            len--;
        for (i = 0; i < cfg->nupstreams; i++)
            if (strlen(cfg->upstreams[i].name) == len &&
                memcmp(cfg->upstreams[i].name, p, len) == 0)
                break;
        if (len > 0 && i == cfg->nupstreams) {
            fprintf(stderr,
                    "ferry keys create: --upstreams: no upstream '%.*s' in the "
                    "configuration (it has:",
                    (int)len, p);
            for (i = 0; i < cfg->nupstreams; i++)
                fprintf(stderr, " %s", cfg->upstreams[i].name);
            fprintf(stderr, "%s)\n", cfg->config_file[0] ? "" : "; pass -c FILE");
            return -EINVAL;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    return 0;
}

static int keys_create(const struct config *cfg, int argc, char **argv)
{
    const char *name = NULL, *models = NULL, *upstreams = NULL, *expires = NULL, *pos[1];
    const struct flag flags[] = {
        {"--name", &name, NULL},
        {"--models", &models, NULL},
        {"--upstreams", &upstreams, NULL},
        {"--expires", &expires, NULL},
    };
    char key[STORE_KEY_LEN + 1], when[40];
    int64_t now = now_ms(), expires_at = 0, span;
    struct store_key row, other;
    struct store *s = NULL;
    size_t npos;
    int rc;

    rc = parse_flags("keys create", argc, argv, flags, 4, pos, 0, &npos);
    if (rc != 0) {
        if (rc > 0)
            keys_help(stdout);
        return rc > 0 ? 0 : EXIT_USAGE;
    }
    if (name == NULL) {
        fprintf(stderr, "ferry keys create: --name NAME is required\n");
        return EXIT_USAGE;
    }
    if (expires != NULL) {
        if (parse_span(expires, &span) == 0) {
            expires_at = now + span;
        } else if (parse_iso(expires, &expires_at) != 0) {
            fprintf(stderr,
                    "ferry keys create: --expires: '%s' is neither a span (30d, 12h, "
                    "90m, 2w) nor a date (2025-12-31, 2025-12-31T18:00Z)\n",
                    expires);
            return EXIT_USAGE;
        } else if (expires_at <= now) {
            fprintf(stderr, "ferry keys create: --expires: %s is in the past\n", expires);
            return EXIT_USAGE;
        }
    }
    if (check_upstreams(cfg, upstreams) != 0)
        return EXIT_USAGE;
    if (open_store(cfg, 1, &s) != 0)
        return EXIT_FAIL;
    rc = store_key_create(s, name, models, upstreams, expires_at, now, key, &row);
    if (rc == -EINVAL) {
        fprintf(stderr,
                "ferry keys create: --name must be 1 to %d of A-Z a-z 0-9 . _ @ : + - (not only "
                "digits, not starting with -), and --models / --upstreams comma lists without "
                "blanks or empty items (at most %d characters)\n",
                STORE_NAME_MAX, STORE_LIST_MAX);
        rc = EXIT_USAGE;
    } else if (rc == -EEXIST) {
        if (store_key_by_name(s, name, &other) == 0)
            fprintf(stderr, "ferry keys create: a key named '%s' exists already (id %lld)\n", name,
                    (long long)other.id);
        else
            fprintf(stderr, "ferry keys create: key '%s' collides with an existing one\n", name);
        rc = EXIT_FAIL;
    } else if (rc != 0) {
        fprintf(stderr, "ferry keys create: store %s: %s\n", cfg->store, store_errmsg(s));
        rc = EXIT_FAIL;
    } else {
        printf("%s\n", key);
        fflush(stdout);
        explicit_bzero(key, sizeof(key));
        fprintf(stderr,
                "ferry: created key %lld '%s' (%s), %s%s. It is shown once, above: the store "
                "keeps only its hash.\n",
                (long long)row.id, row.name, row.prefix, row.expires_at ? "expires " : "",
                row.expires_at ? fmt_time(when, sizeof(when), row.expires_at, 1) : "no expiry");
        if (strcmp(cfg->auth, "keys") != 0)
            fprintf(stderr,
                    "ferry: note: relay keys are checked only with auth: keys "
                    "(this configuration has auth: %s)\n",
                    cfg->auth);
    }
    store_close(s);
    return rc;
}

static int keys_list(const struct config *cfg, int argc, char **argv)
{
    const char *pos[1];
    int json = 0, rc;
    const struct flag flags[] = {{"--json", NULL, &json}};
    struct store_key *keys = NULL;
    struct store *s = NULL;
    int64_t now = now_ms();
    size_t n = 0, npos;

    rc = parse_flags("keys list", argc, argv, flags, 1, pos, 0, &npos);
    if (rc != 0) {
        if (rc > 0)
            keys_help(stdout);
        return rc > 0 ? 0 : EXIT_USAGE;
    }
    if (open_store(cfg, 0, &s) != 0)
        return EXIT_FAIL;
    rc = store_key_list(s, &keys, &n);
    if (rc != 0) {
        fprintf(stderr, "ferry keys list: store %s: %s\n", cfg->store, store_errmsg(s));
        store_close(s);
        return EXIT_FAIL;
    }
    if (json) {
        putchar('[');
        for (size_t i = 0; i < n; i++) {
            fputs(i ? ",\n" : "\n", stdout);
            key_json(&keys[i], now);
        }
        fputs(n ? "\n]\n" : "]\n", stdout);
    } else {
        static const char *const head[] = {"ID",        "NAME",    "PREFIX",  "MODELS",
                                           "UPSTREAMS", "CREATED", "EXPIRES", "STATUS"};
        enum { NCOL = 8 };
        char(*cells)[NCOL][STORE_LIST_MAX + 48] = calloc(n ? n : 1, sizeof(*cells));
        int width[NCOL];
        if (cells == NULL) {
            free(keys);
            store_close(s);
            fprintf(stderr, "ferry keys list: out of memory\n");
            return EXIT_FAIL;
        }
        for (int c = 0; c < NCOL; c++)
            width[c] = text_width(head[c]);
        for (size_t i = 0; i < n; i++) {
            const struct store_key *k = &keys[i];
            char t[40];
            snprintf(cells[i][0], sizeof(cells[i][0]), "%lld", (long long)k->id);
            snprintf(cells[i][1], sizeof(cells[i][1]), "%s", k->name);
            snprintf(cells[i][2], sizeof(cells[i][2]), "%s", k->prefix);
            snprintf(cells[i][3], sizeof(cells[i][3]), "%s", k->models[0] ? k->models : "*");
            snprintf(cells[i][4], sizeof(cells[i][4]), "%s", k->upstreams[0] ? k->upstreams : "*");
            snprintf(cells[i][5], sizeof(cells[i][5]), "%s",
                     fmt_time(t, sizeof(t), k->created_at, 0));
            snprintf(cells[i][6], sizeof(cells[i][6]), "%s",
                     k->expires_at ? fmt_time(t, sizeof(t), k->expires_at, 0) : "never");
            if (k->revoked_at)
                snprintf(cells[i][7], sizeof(cells[i][7]), "revoked %s",
                         fmt_time(t, sizeof(t), k->revoked_at, 0));
            else
                snprintf(cells[i][7], sizeof(cells[i][7]), "%s", key_status(k, now));
            for (int c = 0; c < NCOL; c++)
                if (text_width(cells[i][c]) > width[c])
                    width[c] = text_width(cells[i][c]);
        }
        for (int c = 0; c < NCOL; c++)
            pad(head[c], width[c], c == NCOL - 1);
        putchar('\n');
        for (size_t i = 0; i < n; i++) {
            for (int c = 0; c < NCOL; c++)
                pad(cells[i][c], width[c], c == NCOL - 1);
            putchar('\n');
        }
        if (n == 0)
            fprintf(stderr, "ferry: no keys yet (ferry keys create --name NAME)\n");
        free(cells);
    }
    free(keys);
    store_close(s);
    return 0;
}

/* show and revoke: one key named by ID or NAME. */
static int keys_one(const struct config *cfg, const char *cmd, int revoke, int argc, char **argv)
{
    const char *pos[1];
    int json = 0, rc;
    const struct flag flags[] = {{"--json", NULL, &json}};
    struct store *s = NULL;
    struct store_key k;
    int64_t now = now_ms();
    char t[40];
    size_t npos;

    rc = parse_flags(cmd, argc, argv, flags, revoke ? 0 : 1, pos, 1, &npos);
    if (rc != 0) {
        if (rc > 0)
            keys_help(stdout);
        return rc > 0 ? 0 : EXIT_USAGE;
    }
    if (npos != 1) {
        fprintf(stderr, "ferry %s: which key? (ferry %s ID|NAME)\n", cmd, cmd);
        return EXIT_USAGE;
    }
    if (open_store(cfg, 0, &s) != 0)
        return EXIT_FAIL;
    rc = store_key_lookup(s, pos[0], &k);
    if (rc == 0 && revoke) {
        rc = store_key_revoke(s, k.id, now);
        if (rc == 0)
            fprintf(stderr, "ferry: revoked key %lld '%s' (%s)\n", (long long)k.id, k.name,
                    k.prefix);
        else if (rc == 1)
            fprintf(stderr, "ferry: key %lld '%s' was revoked already, at %s\n", (long long)k.id,
                    k.name, fmt_time(t, sizeof(t), k.revoked_at, 1));
        rc = rc > 0 ? 0 : rc;
    }
    if (rc == -ENOENT) {
        fprintf(stderr, "ferry %s: no key with id or name '%s'\n", cmd, pos[0]);
        store_close(s);
        return EXIT_FAIL;
    }
    if (rc != 0) {
        fprintf(stderr, "ferry %s: store %s: %s\n", cmd, cfg->store, store_errmsg(s));
        store_close(s);
        return EXIT_FAIL;
    }
    if (!revoke && json) {
        key_json(&k, now);
        putchar('\n');
    } else if (!revoke) {
        printf("id:         %lld\n", (long long)k.id);
        printf("name:       %s\n", k.name);
        printf("prefix:     %s\n", k.prefix);
        printf("models:     %s\n", k.models[0] ? k.models : "* (any)");
        printf("upstreams:  %s\n", k.upstreams[0] ? k.upstreams : "* (any)");
        printf("created:    %s\n", fmt_time(t, sizeof(t), k.created_at, 1));
        printf("expires:    %s\n",
               k.expires_at ? fmt_time(t, sizeof(t), k.expires_at, 1) : "never");
        if (k.revoked_at)
            printf("status:     revoked at %s\n", fmt_time(t, sizeof(t), k.revoked_at, 1));
        else
            printf("status:     %s\n", key_status(&k, now));
    }
    store_close(s);
    return 0;
}

static int keys_main(const struct config *cfg, int argc, char **argv)
{
    const char *sub = argc > 0 ? argv[0] : "";

    if (strcmp(sub, "create") == 0)
        return keys_create(cfg, argc - 1, argv + 1);
    if (strcmp(sub, "list") == 0)
        return keys_list(cfg, argc - 1, argv + 1);
    if (strcmp(sub, "show") == 0)
        return keys_one(cfg, "keys show", 0, argc - 1, argv + 1);
    if (strcmp(sub, "revoke") == 0)
        return keys_one(cfg, "keys revoke", 1, argc - 1, argv + 1);
    if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "help") == 0) {
        keys_help(stdout);
        return 0;
    }
    if (*sub)
        fprintf(stderr, "ferry keys: unknown subcommand '%s'\n", sub);
    keys_help(stderr);
    return EXIT_USAGE;
}

/* ---- usage ---- */

static const char *const dim_names[STORE_NDIMS] = {
    [STORE_BY_KEY] = "key",           [STORE_BY_MODEL] = "model",   [STORE_BY_DAY] = "day",
    [STORE_BY_UPSTREAM] = "upstream", [STORE_BY_STATUS] = "status",
};

static int parse_by(const char *list, enum store_dim *dims, size_t *ndims)
{
    *ndims = 0;
    for (const char *p = list;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int found = -1;
        for (int d = 0; d < STORE_NDIMS; d++)
            if (strlen(dim_names[d]) == len && memcmp(dim_names[d], p, len) == 0)
                found = d;
        for (size_t i = 0; found >= 0 && i < *ndims; i++)
            if (dims[i] == (enum store_dim)found)
                found = -1; /* twice */
        if (found < 0) {
            fprintf(stderr,
                    "ferry usage: --by: '%.*s' is not one of key, model, day, upstream, "
                    "status (each at most once)\n",
                    (int)len, p);
            return -EINVAL;
        }
        dims[(*ndims)++] = (enum store_dim)found;
        if (end == NULL)
            return 0;
        p = end + 1;
    }
}

#define NCOUNTS 9
static const char *const count_names[NCOUNTS] = {
    "requests",     "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
    "total_tokens", "bytes_in",      "bytes_out",         "partial"};
static const char *const count_heads[NCOUNTS] = {"REQUESTS", "PROMPT",    "COMPLETION",
                                                 "CACHED",   "REASONING", "TOTAL",
                                                 "BYTES_IN", "BYTES_OUT", "PARTIAL"};

static void counts_of(const struct store_usage_total *t, int64_t v[NCOUNTS])
{
    v[0] = t->requests;
    v[1] = t->prompt_tokens;
    v[2] = t->completion_tokens;
    v[3] = t->cached_tokens;
    v[4] = t->reasoning_tokens;
    v[5] = t->total_tokens;
    v[6] = t->bytes_in;
    v[7] = t->bytes_out;
    v[8] = t->partial;
}

static void usage_json(const struct store_usage_total *rows, size_t n,
                       const struct store_usage_total *sum, const enum store_dim *dims,
                       size_t ndims, int64_t since)
{
    int64_t v[NCOUNTS];

    fputs("{\"since\":", stdout);
    json_time(since);
    fputs(",\"by\":[", stdout);
    for (size_t d = 0; d < ndims; d++)
        printf("%s\"%s\"", d ? "," : "", dim_names[dims[d]]);
    fputs("],\"groups\":[", stdout);
    for (size_t i = 0; ndims > 0 && i < n; i++) {
        fputs(i ? ",\n" : "\n", stdout);
        putchar('{');
        for (size_t d = 0; d < ndims; d++) {
            printf("\"%s\":", dim_names[dims[d]]);
            if (dims[d] == STORE_BY_STATUS)
                printf("%s,", rows[i].group[d]);
            else {
                json_str(rows[i].group[d]);
                putchar(',');
            }
        }
        counts_of(&rows[i], v);
        for (int c = 0; c < NCOUNTS; c++)
            printf("%s\"%s\":%lld", c ? "," : "", count_names[c], (long long)v[c]);
        putchar('}');
    }
    fputs(ndims > 0 && n > 0 ? "\n],\"total\":{" : "],\"total\":{", stdout);
    counts_of(sum, v);
    for (int c = 0; c < NCOUNTS; c++)
        printf("%s\"%s\":%lld", c ? "," : "", count_names[c], (long long)v[c]);
    fputs("}}\n", stdout);
}

static void usage_table(const struct store_usage_total *rows, size_t n,
                        const struct store_usage_total *sum, const enum store_dim *dims,
                        size_t ndims)
{
    int width[STORE_NDIMS + NCOUNTS];
    char num[32];
    int64_t v[NCOUNTS];

    for (size_t d = 0; d < ndims; d++) {
        width[d] = (int)strlen(dim_names[dims[d]]);
        for (size_t i = 0; i < n; i++)
            if (text_width(rows[i].group[d]) > width[d])
                width[d] = text_width(rows[i].group[d]);
        if (d == 0 && width[0] < 5)
            width[0] = 5; /* "TOTAL" */
    }
    counts_of(sum, v); /* the total is the widest number of each column */
    for (int c = 0; c < NCOUNTS; c++) {
        int w = snprintf(num, sizeof(num), "%lld", (long long)v[c]);
        width[ndims + (size_t)c] = (int)strlen(count_heads[c]);
        if (w > width[ndims + (size_t)c])
            width[ndims + (size_t)c] = w;
    }
    for (size_t d = 0; d < ndims; d++) {
        char head[16];
        size_t k;
        for (k = 0; dim_names[dims[d]][k] && k + 1 < sizeof(head); k++)
            head[k] = (char)toupper((unsigned char)dim_names[dims[d]][k]);
        head[k] = '\0';
        pad(head, width[d], 0);
    }
    for (int c = 0; c < NCOUNTS; c++)
        printf("%*s%s", width[ndims + (size_t)c], count_heads[c], c + 1 < NCOUNTS ? "  " : "\n");
    for (size_t i = 0; ndims > 0 && i <= n; i++) {
        const struct store_usage_total *t = i < n ? &rows[i] : sum;
        for (size_t d = 0; d < ndims; d++)
            pad(i < n ? t->group[d] : d == 0 ? "TOTAL" : "", width[d], 0);
        counts_of(t, v);
        for (int c = 0; c < NCOUNTS; c++)
            printf("%*lld%s", width[ndims + (size_t)c], (long long)v[c],
                   c + 1 < NCOUNTS ? "  " : "\n");
    }
    if (ndims == 0) {
        counts_of(sum, v);
        for (int c = 0; c < NCOUNTS; c++)
            printf("%*lld%s", width[c], (long long)v[c], c + 1 < NCOUNTS ? "  " : "\n");
    }
}

static int usage_main(const struct config *cfg, int argc, char **argv)
{
    const char *since = NULL, *by = NULL, *pos[1];
    int json = 0, rc;
    const struct flag flags[] = {
        {"--since", &since, NULL},
        {"--by", &by, NULL},
        {"--json", NULL, &json},
    };
    enum store_dim dims[STORE_NDIMS];
    struct store_usage_total *rows = NULL, sum;
    struct store *s = NULL;
    int64_t since_ms = 0, span;
    size_t ndims = 0, n = 0, npos;
    char t[40];

    rc = parse_flags("usage", argc, argv, flags, 3, pos, 0, &npos);
    if (rc != 0) {
        if (rc > 0)
            usage_help(stdout);
        return rc > 0 ? 0 : EXIT_USAGE;
    }
    if (since != NULL) {
        if (parse_span(since, &span) == 0) {
            since_ms = now_ms() - span;
        } else if (parse_iso(since, &since_ms) != 0) {
            fprintf(stderr,
                    "ferry usage: --since: '%s' is neither a span back from now (24h, "
                    "7d) nor a date (2025-01-31, 2025-01-31T12:00Z)\n",
                    since);
            return EXIT_USAGE;
        }
    }
    if (by != NULL && parse_by(by, dims, &ndims) != 0)
        return EXIT_USAGE;
    if (open_store(cfg, 0, &s) != 0)
        return EXIT_FAIL;
    rc = store_usage_totals(s, since_ms, dims, ndims, &rows, &n);
    if (rc != 0) {
        fprintf(stderr, "ferry usage: store %s: %s\n", cfg->store, store_errmsg(s));
        store_close(s);
        return EXIT_FAIL;
    }
    memset(&sum, 0, sizeof(sum));
    for (size_t i = 0; i < n; i++) {
        sum.requests += rows[i].requests;
        sum.prompt_tokens += rows[i].prompt_tokens;
        sum.completion_tokens += rows[i].completion_tokens;
        sum.cached_tokens += rows[i].cached_tokens;
        sum.reasoning_tokens += rows[i].reasoning_tokens;
        sum.total_tokens += rows[i].total_tokens;
        sum.bytes_in += rows[i].bytes_in;
        sum.bytes_out += rows[i].bytes_out;
        sum.partial += rows[i].partial;
    }
    if (json) {
        usage_json(rows, n, &sum, dims, ndims, since_ms);
    } else {
        if (since_ms)
            printf("usage since %s\n", fmt_time(t, sizeof(t), since_ms, 1));
        else
            printf("usage, all recorded\n");
        usage_table(rows, n, &sum, dims, ndims);
    }
    free(rows);
    store_close(s);
    return 0;
}

int cli_run(const struct config *cfg, int argc, char **argv)
{
    if (strcmp(argv[0], "keys") == 0)
        return keys_main(cfg, argc - 1, argv + 1);
    if (strcmp(argv[0], "usage") == 0)
        return usage_main(cfg, argc - 1, argv + 1);
    fprintf(stderr, "ferry: unknown command '%s'\n", argv[0]);
    return EXIT_USAGE;
}
