/* sockd: the socket broker daemon. Options, config, signals, start and stop order. */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <sockd/client.h>

#include "ctl.h"
#include "daemon.h"
#include "keygen.h"
#include "log.h"
#include "nbguard.h"
#include "resolve.h"
#include "sdnotify.h"
#include "sock.h"

static const char *conf_path;
static int verbose; /* -v count */
static ev_signal sig_int, sig_term, sig_hup;

static void
usage(FILE *f)
{
    fprintf(f, "usage: sockd [-hVtv] [-s PATH] [-c FILE]\n"
               "  -s PATH  control socket path (default: $SOCKD_SOCKET, /run/sockd/sockd.sock\n"
               "           for root, $XDG_RUNTIME_DIR/sockd.sock, /tmp/sockd-$UID.sock)\n"
               "  -c FILE  configuration file (default: none, built-in defaults)\n"
               "  -t       check the configuration file and exit (0 = good)\n"
               "  -v       more log output (repeat for debug)\n"
               "  -V       print the version and exit\n"
               "  -h       this help\n"
               "sockd runs in the foreground and logs to stderr; SIGTERM or SIGINT stop it,\n"
               "SIGHUP reloads the configuration file.\n");
}

static void
stop_cb(EV_P_ ev_signal *w, int revents)
{
    (void)revents;
    log_info("signal %d: shutting down", w->signum);
    sdn_stopping(); /* before clients hear daemon_shutdown */
    sockd.stopping = 1;
    ctl_unlisten();
    ctl_shutdown(sockd.conf.shutdown_timeout_ms / 1000.0);
    ev_break(EV_A_ EVBREAK_ALL);
}

/* SIGHUP: parse the file whole; swap it in, or keep the old config and say why. */
static void
reload_conf(EV_P)
{
    struct conf nc;
    char *cause = NULL;
    if (conf_path == NULL) {
        log_info("SIGHUP: no configuration file to reload");
        return;
    }
    conf_defaults(&nc);
    if (conf_load(conf_path, &nc, &cause) < 0) {
        log_error("reload refused, old configuration kept: %s", cause ? cause : "error");
        free(cause);
        conf_free(&nc);
        return;
    }
    const char *rcause;
    if (resolve_init(EV_A_ & nc, &rcause) < 0) {
        log_error("reload refused, old configuration kept: resolver: %s", rcause);
        conf_free(&nc);
        return;
    }
    free(nc.listen);
    nc.listen = sockd.conf.listen; /* the control socket stays where it is */
    sockd.conf.listen = NULL;
    conf_free(&sockd.conf);
    sockd.conf = nc;
    log_set_level(nc.log_level + verbose); /* -v on the command line still counts */
    log_info("configuration reloaded from %s", conf_path);
}

/* The service manager hears RELOADING=1 before and READY=1 after, whether or not it took. */
static void
reload_cb(EV_P_ ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    sdn_reloading();
    reload_conf(EV_A);
    sdn_ready();
}

int
main(int argc, char **argv)
{
    const char *sock_path = NULL, *cause;
    int test_only = 0, ch;
    char pathbuf[4096], *err = NULL;

    while ((ch = getopt(argc, argv, "hVtvs:c:")) != -1) {
        switch (ch) {
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("sockd %s\n", PACKAGE_VERSION);
            return 0;
        case 't':
            test_only = 1;
            break;
        case 'v':
            verbose++;
            break;
        case 's':
            sock_path = optarg;
            break;
        case 'c':
            conf_path = optarg;
            break;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (loop == NULL) {
        fprintf(stderr, "sockd: cannot initialise the event loop\n");
        return 1;
    }
    daemon_init(loop);
    ctl_turn_start(loop);
    if (conf_path != NULL && conf_load(conf_path, &sockd.conf, &err) < 0) {
        fprintf(stderr, "sockd: %s\n", err ? err : "bad configuration");
        free(err);
        conf_free(&sockd.conf);
        return 1;
    }
    if (test_only) {
        if (conf_path == NULL) {
            fprintf(stderr, "sockd: -t needs -c FILE\n");
            return 2;
        }
        printf("sockd: %s: configuration good\n", conf_path);
        return 0;
    }
    log_set_level(sockd.conf.log_level + verbose);

    signal(SIGPIPE, SIG_IGN);
    OPENSSL_init_ssl(0, NULL);

    /* A socket passed by the service manager takes precedence over -s and "listen". */
    int act_fd;
    const char *act_name;
    char act_err[512];
    int activated = sdn_listen_fd(&act_fd, &act_name, act_err, sizeof act_err);
    if (activated < 0) {
        log_error("%s", act_err);
        return 1;
    }
    if (activated) {
        sock_path = sdn_socket_name(act_fd, pathbuf, sizeof pathbuf);
    } else {
        if (sock_path == NULL)
            sock_path = sockd.conf.listen;
        sock_path = sockd_socket_path(sock_path, pathbuf, sizeof pathbuf);
        if (sock_path == NULL) {
            fprintf(stderr, "sockd: control socket path too long\n");
            return 1;
        }
    }
    const char *gcause;
    if (nbguard_init(&gcause) < 0) {
        log_error("cannot set up the guard of client-provided descriptors: %s: %s", gcause,
                  strerror(errno));
        return 1;
    }
    if (resolve_init(loop, &sockd.conf, &cause) < 0) {
        log_error("resolver: %s", cause);
        return 1;
    }
    if (activated) {
        ctl_adopt(act_fd); /* not ours to unlink at exit: the socket unit owns the path */
        log_info("socket activation: control socket fd %d%s%s%s passed by the service manager "
                 "(-s, \"listen\" and the socket mode and group settings are not used)",
                 act_fd, act_name[0] ? " (" : "", act_name, act_name[0] ? ")" : "");
    } else if (ctl_listen(sock_path, sockd.conf.socket_mode, sockd.conf.socket_gid, &cause) < 0) {
        log_error("cannot listen on %s: %s", sock_path, cause);
        return 1;
    }
    ev_signal_init(&sig_int, stop_cb, SIGINT);
    ev_signal_init(&sig_term, stop_cb, SIGTERM);
    ev_signal_init(&sig_hup, reload_cb, SIGHUP);
    ev_signal_start(loop, &sig_int);
    ev_signal_start(loop, &sig_term);
    ev_signal_start(loop, &sig_hup);
    log_info("sockd %s listening on %s", PACKAGE_VERSION, sock_path);
    if (sockd.conf.policy == NULL && geteuid() == 0)
        log_warn("running as root with no access policy (%s): every client that can reach %s "
                 "may connect, bind and send anywhere root can (sockd(8), SECURITY MODEL: "
                 "Running it safely)",
                 conf_path ? "no rules in the configuration file" : "no configuration file",
                 sock_path);
    if (sdn_init() > 0) {
        sdn_start(loop);
        sdn_ready();
    }

    ev_run(loop, 0);

    sdn_shutdown();
    log_info("stopped");
    resolve_shutdown();
    keygen_shutdown();
    conf_free(&sockd.conf);
    idmap_free(&sockd.socks);
    idmap_free(&sockd.accts);
    ev_loop_destroy(loop);
    return 0;
}
