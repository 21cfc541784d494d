/* host_main.c — the `moonflow` executable: the REPL, the script runner and the command-line
 * options all live in host.c (mf_host_main), so that C programs can embed the same host. */
#include "moonflow_host.h"

int main(int argc, char **argv) { return mf_host_main(argc, argv); }
