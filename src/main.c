/* main — ferry's entry point: reads the settings and runs the relay. */
#include <stdio.h>

#include "config.h"
#include "server.h"

int main(int argc, char **argv)
{
    static struct config cfg; /* read-only for every thread once loaded */
    int rc = config_load(&cfg, argc, argv);

    if (rc != 0)
        return rc > 0 ? 0 : 2;
    return server_run(&cfg);
}
