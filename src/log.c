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

/* One line on stderr: level word, then the message; to the journal, "<N>" and the message. */
void
log_msg(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (level > log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (log_journal < 0)
        log_journal = log_to_journal();
    if (log_journal)
        fprintf(stderr, "<%c>%s\n", log_prio[level], line);
    else
        fprintf(stderr, "sockd: %s: %s\n", log_names[level], line);
}
