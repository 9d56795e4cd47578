#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int log_level = LOG_LVL_INFO;
static const char *const log_names[] = {"error", "warning", "info", "debug"};
/* syslog priorities of the levels, for the journal's "<N>" line prefix (sd-daemon(3)). */
static const char log_prio[] = {'3', '4', '6', '7'};
static int log_journal = -1; /* stderr is the journal: -1 not checked yet, 0 no, 1 yes */

/*
 * systemd sets JOURNAL_STREAM=DEV:INO for a stderr connected to the journal; it only counts if
 * stderr is still that stream (not redirected by a wrapper or a test harness).
 */
static int
log_to_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    int end = 0;

    if (e == NULL || sscanf(e, "%llu:%llu%n", &dev, &ino, &end) != 2 || e[end] != '\0' ||
        fstat(STDERR_FILENO, &st) < 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void
log_set_level(int level)
{
    if (level < LOG_LVL_ERROR)
        level = LOG_LVL_ERROR;
    if (level > LOG_LVL_DEBUG)
        level = LOG_LVL_DEBUG;
    log_level = level;
}

int
log_get_level(void)
{
    return log_level;
}

int
log_level_parse(const char *word)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(word, log_names[i]) == 0)
            return i;
    return -1;
}

/* Length of the valid UTF-8 sequence at p (at most left bytes), or 0 (RFC 3629). */
static size_t
log_utf8_len(const unsigned char *p, size_t left)
{
    unsigned c = p[0], min, cp;
    size_t n;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0; /* overlong, beyond Unicode, or a surrogate */
    return n;
}

/*
 * Copy in to out (room for size bytes) so that it stays one line of text whatever a client put
 * in it: a newline becomes \n, every other control byte, DEL, and each byte that is not part of
 * valid UTF-8 becomes \xNN, and a backslash \\ (so an escape cannot be faked either).
 */
static void
log_escape(const char *in, char *out, size_t size)
{
    const unsigned char *p = (const unsigned char *)in, *end = p + strlen(in);
    size_t w = 0;
    while (p < end) {
        size_t n = log_utf8_len(p, (size_t)(end - p));
        char esc[5];
        if (*p == '\\' || *p == '\n') {
            esc[0] = '\\', esc[1] = *p == '\n' ? 'n' : '\\', esc[2] = '\0';
            n = 1;
        } else if (n == 0 || *p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", *p);
            n = 1;
        } else {
            if (w + n >= size)
                break;
            memcpy(out + w, p, n);
            w += n;
            p += n;
            continue;
        }
        size_t el = strlen(esc);
        if (w + el >= size)
            break; /* truncated between characters, never inside one */
        memcpy(out + w, esc, el);
        w += el;
        p += n;
    }
    out[w] = '\0';
}

/*
 * One line on stderr: level word, then the message; to the journal, "<N>" and the message.
 * Client strings in the message are escaped here, so no caller can let one forge a line.
 */
static void
log_vmsg(int level, const char *fmt, va_list ap)
{
    char raw[1024], line[4 * sizeof raw];

    vsnprintf(raw, sizeof raw, fmt, ap);
    log_escape(raw, line, sizeof line);
    if (log_journal < 0)
        log_journal = log_to_journal();
    if (log_journal)
        fprintf(stderr, "<%c>%s\n", log_prio[level], line);
    else
        fprintf(stderr, "sockd: %s: %s\n", log_names[level], line);
}

void
log_msg(int level, const char *fmt, ...)
{
    va_list ap;

    if (level > log_level)
        return;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

/* The budget of lines clients cause (a token bucket), and what it left out. */
static double log_client_tokens = LOG_CLIENT_BURST, log_client_at = -1;
static unsigned long log_client_held, log_client_total;

/* Whether one more line a client caused may be written now. */
static int
log_client_take(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    if (log_client_at >= 0)
        log_client_tokens += (now - log_client_at) * LOG_CLIENT_RATE;
    log_client_at = now;
    if (log_client_tokens > LOG_CLIENT_BURST)
        log_client_tokens = LOG_CLIENT_BURST;
    if (log_client_tokens < 1) {
        log_client_held++;
        log_client_total++;
        return 0;
    }
    log_client_tokens -= 1;
    return 1;
}

void
log_client(int level, const char *fmt, ...)
{
    va_list ap;

    if (level > log_level || !log_client_take())
        return;
    if (log_client_held > 0) {
        log_msg(LOG_LVL_WARNING, "%lu lines about clients left out (more than %d a second)",
                log_client_held, LOG_CLIENT_RATE);
        log_client_held = 0;
    }
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

unsigned long
log_client_left_out(void)
{
    return log_client_total;
}
