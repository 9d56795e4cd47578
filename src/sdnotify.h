#ifndef SOCKD_SDNOTIFY_H
#define SOCKD_SDNOTIFY_H
#endif
