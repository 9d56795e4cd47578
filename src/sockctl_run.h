/*
 * sockctl run: a program's network through sockd (sockctl.1, RUN). A supervisor takes over
 * the program's connect, bind and addressed sends with seccomp user notification and replaces
 * each socket by one that sockd made under its policy and the restriction set up here.
 */
#ifndef SOCKD_SOCKCTL_RUN_H
#define SOCKD_SOCKCTL_RUN_H

#include "sockctl.h"

/* The run verb: argv[0] is "run"; returns the program's exit status (128 + signal if killed),
 * or 2 for a usage error and 3 when the daemon cannot be reached. */
int sockctl_cmd_run(const struct sockctl_opts *o, int argc, char **argv);

#endif
