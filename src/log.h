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
/*
 * A line a client causes (its connections and sockets coming and going, policy denials,
 * refusals): through one budget for all clients, LOG_CLIENT_BURST lines at once, then
 * LOG_CLIENT_RATE a second, so that no client floods the log or spends the daemon's time on
 * writing it. The first line let through after some were left out says how many.
 */
#define LOG_CLIENT_BURST 200
#define LOG_CLIENT_RATE 50
void log_client(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Lines log_client left out since the start (daemon.stats). */
unsigned long log_client_left_out(void);

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_client_warn(...) log_client(LOG_LVL_WARNING, __VA_ARGS__)
#define log_client_info(...) log_client(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= LOG_LVL_DEBUG)                                                      \
            log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                                                   \
    } while (0)

#endif
