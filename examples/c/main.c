/*
 * The gobuildcache C ABI from C: open a cache, put a body, get it back, read the stats,
 * see the error codes, close. scripts/test-ffi.sh builds this with -Wall -Wextra -Werror
 * and checks its output line by line.
 *
 *   cargo build --release -p gobuildcache-ffi
 *   cc -Wall -Wextra -Werror -Iinclude examples/c/main.c \
 *      target/release/libgobuildcache_ffi.a -lpthread -ldl -lm -o gbc-example
 *   ./gbc-example /tmp/some-cache-dir
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gobuildcache.h"

/* Prints the calling thread's last error; exits the program. */
static void die(const char *what, gbc_result r) {
    char msg[512];
    size_t n = 0;
    gbc_last_error_message(msg, sizeof msg, &n);
    fprintf(stderr, "%s: result %u: %s\n", what, (unsigned)r, msg);
    exit(1);
}

static void print_error(const char *what, gbc_result r) {
    char msg[512];
    size_t n = 0;
    if (gbc_last_error_message(msg, sizeof msg, &n) != GBC_RESULT_OK) {
        die("gbc_last_error_message", GBC_RESULT_INVALID_ARGUMENT);
    }
    printf("%s: code %u: %s\n", what, (unsigned)r, msg);
}

/* Writes a JSON string literal for s (the cache dir may hold quotes or backslashes). */
static void json_string(char *out, size_t cap, const char *s) {
    size_t j = 0;
    out[j++] = '"';
    for (; *s && j + 3 < cap; s++) {
        if (*s == '"' || *s == '\\') {
            out[j++] = '\\';
        }
        out[j++] = *s;
    }
    out[j++] = '"';
    out[j] = '\0';
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CACHE_DIR\n", argv[0]);
        return 2;
    }
    if (gbc_abi_version() != GBC_ABI_VERSION) {
        fprintf(stderr, "ABI mismatch: library %u, header %u\n", gbc_abi_version(),
                (unsigned)GBC_ABI_VERSION);
        return 1;
    }
    printf("abi %u\n", gbc_abi_version());

    char dir[1024];
    char config[1200];
    json_string(dir, sizeof dir, argv[1]);
    snprintf(config, sizeof config, "{\"cache-dir\": %s, \"stats\": false}", dir);

    gbc_cache *cache = NULL;
    gbc_result r = gbc_cache_open(config, 0, &cache);
    if (r != GBC_RESULT_OK) {
        die("open", r);
    }

    uint8_t action[GBC_ID_LEN];
    memset(action, 0xAB, sizeof action);
    const char *body = "hello from C\n";
    /* sha256("hello from C\n"): the OutputID is the SHA-256 of the body. */
    static const uint8_t output[GBC_ID_LEN] = {
        0x4e, 0x41, 0x50, 0xd5, 0x32, 0xd0, 0xd9, 0xc6, 0x4c, 0x48, 0xd9, 0x3f, 0x4e, 0x31, 0x92, 0x39,
        0x24, 0x02, 0xcd, 0xd1, 0xc9, 0xc4, 0xc9, 0x18, 0x42, 0x31, 0x27, 0x6f, 0x4c, 0xa4, 0x5d, 0x4c,
    };

    gbc_entry entry;
    r = gbc_cache_get(cache, action, sizeof action, &entry);
    if (r != GBC_RESULT_NOT_FOUND) {
        die("get before put", r);
    }
    printf("get: miss\n");

    r = gbc_cache_put_bytes(cache, action, sizeof action, output, sizeof output,
                            (const uint8_t *)body, strlen(body), &entry);
    if (r != GBC_RESULT_OK) {
        die("put", r);
    }
    printf("put: size %llu\n", (unsigned long long)entry.size);
    gbc_string_free(entry.path);

    r = gbc_cache_get(cache, action, sizeof action, &entry);
    if (r != GBC_RESULT_OK) {
        die("get after put", r);
    }
    printf("get: hit size %llu, output id matches: %s\n", (unsigned long long)entry.size,
           memcmp(entry.output_id, output, GBC_ID_LEN) == 0 ? "yes" : "no");
    FILE *f = fopen(entry.path, "rb");
    char buf[64] = {0};
    size_t got = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) {
        fclose(f);
    }
    printf("disk path holds the body: %s\n",
           got == strlen(body) && memcmp(buf, body, got) == 0 ? "yes" : "no");
    gbc_string_free(entry.path);

    /* A body that does not hash to its OutputID is refused and stores nothing. */
    r = gbc_cache_put_bytes(cache, action, sizeof action, output, sizeof output,
                            (const uint8_t *)"tampered", 8, &entry);
    print_error("put tampered", r);
    /* IDs are exactly 32 bytes. */
    r = gbc_cache_get(cache, action, 31, &entry);
    print_error("get short id", r);
    r = gbc_cache_get(cache, NULL, 32, &entry);
    print_error("get null id", r);

    char *stats = NULL;
    r = gbc_cache_stats_json(cache, &stats);
    if (r != GBC_RESULT_OK) {
        die("stats", r);
    }
    printf("stats: puts=1 %s, hits=1 %s\n", strstr(stats, "\"puts\":1,") ? "yes" : "no",
           strstr(stats, "\"hits\":1,") ? "yes" : "no");
    gbc_string_free(stats);

    r = gbc_cache_close(cache);
    if (r != GBC_RESULT_OK) {
        die("close", r);
    }
    r = gbc_cache_get(cache, action, sizeof action, &entry);
    print_error("get after close", r);
    gbc_cache_free(cache);
    gbc_cache_free(NULL);
    printf("done\n");
    return 0;
}
