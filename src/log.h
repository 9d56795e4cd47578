/* Logging to stderr with a level; the daemon layer logs, low-level code returns causes. */
#ifndef SOCKD_LOG_H
#define SOCKD_LOG_H

enum log_level {
    LOG_LVL_ERROR = 0,   /* something failed that the operator must see */
    LOG_LVL_WARNING = 1, /* unusual but handled */
    LOG_LVL_INFO = 2,    /* lifecycle: start, stop, clients */
    LOG_LVL_DEBUG = 3,   /* per request and per socket detail */
};

void log_set_level(int level);
int log_get_level(void);
int log_level_parse(const char *word); /* -1 if unknown */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= LOG_LVL_DEBUG)                                                      \
            log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                                                   \
    } while (0)

#endif
