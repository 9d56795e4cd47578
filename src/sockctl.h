#ifndef SOCKCTL_H
#define SOCKCTL_H

/* sockctl's global options, shared by its verbs (sockctl.c) and sockctl run (sockctl_run.c). */
struct sockctl_opts {
    const char *path; /* -s, or NULL to resolve as the daemon does */
    int json;         /* --json: machine-readable output */
    int timeout_ms;   /* -t: wait for each response, -1 forever */
};

#endif
