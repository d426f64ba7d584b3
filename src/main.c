/* main — ferry's entry point: reads the settings and runs the relay, checks a configuration
 * file (ferry check-config -c FILE), or runs a store subcommand (ferry keys ..., ferry usage). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "server.h"

static int check_config(const struct config *cfg)
{
    printf("%s: ok: listen %s:%d, %zu upstream%s, %zu route%s\n",
           cfg->config_file[0] ? cfg->config_file : "(no file)", cfg->listen_host, cfg->listen_port,
           cfg->nupstreams, cfg->nupstreams == 1 ? "" : "s", cfg->nroutes,
           cfg->nroutes == 1 ? "" : "s");
    for (size_t i = 0; i < cfg->nupstreams; i++) /* never the keys themselves */
        printf("  upstream %s: %s%s%s, %zu key%s\n", cfg->upstreams[i].name, cfg->upstreams[i].url,
               cfg->upstreams[i].proxy[0] ? " via proxy " : "",
               cfg->upstreams[i].proxy[0] ? "(set)" : "", cfg->upstreams[i].nkeys,
               cfg->upstreams[i].nkeys == 1 ? "" : "s");
    for (size_t i = 0; i < cfg->nroutes; i++)
        printf("  route %zu: path %s%s -> %s\n", i + 1, cfg->routes[i].path,
               cfg->routes[i].nmodels ? " + models" : "", cfg->routes[i].upstream->name);
    return 0;
}

int main(int argc, char **argv)
{
    static struct config cfg; /* read-only for every thread once loaded */
    int checking = argc > 1 && strcmp(argv[1], "check-config") == 0;
    int command = argc > 1 && cli_is_command(argv[1]);
    int settings = argc; /* the arguments config_load reads */
    int rc;

    if (checking) {
        argv[1] = argv[0];
        argc--;
        argv++;
        settings = argc;
    } else if (command) {
        /* -c FILE and --store go to config_load, the subcommand's own flags to cli_run. */
        settings = cli_split_args(argc, argv);
        if (settings < 0)
            return 1;
    }
    rc = config_load(&cfg, settings, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (command)
        return cli_run(&cfg, argc - settings, argv + settings);
    return checking ? check_config(&cfg) : server_run(&cfg);
}
