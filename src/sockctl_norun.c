/* sockctl run where libseccomp was missing at build time (sockctl.1, RUN). */
#include "config.h"

#include <stdio.h>

#include "sockctl_run.h"

int
sockctl_cmd_run(const struct sockctl_opts *o, int argc, char **argv)
{
    (void)o;
    (void)argc;
    (void)argv;
    fputs("sockctl run: this sockctl was built without libseccomp (Debian package "
          "libseccomp-dev)\n",
          stderr);
    return 2;
}
