#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

static int log_level = LOG_LVL_INFO;
static const char *const log_names[] = {"error", "warning", "info", "debug"};

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

/* One line on stderr: level word, then the message. */
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
    fprintf(stderr, "sockd: %s: %s\n", log_names[level], line);
}
