/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry: the control CLI. Creates vaults, enables replication of a VM
 * (registering it with its target resources and writing the agent's
 * configuration), shows status, recovery points and VM details, and
 * dispatches every verb: those of the other ferry-*.c files (cli.h) too.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agentconf.h"
#include "cli.h"
#include "env.h"
#include "ferry/blobs.h"
#include "ferry/cache.h"
#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/control.h"
#include "ferry/log.h"
#include "ferry/map.h"
#include "ferry/store.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "ferry/vmdef.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ferry COMMAND [OPTIONS]\n"
		"\n"
		"Commands:\n"
		"  init --vault DIR [--chunk-size BYTES]     create a vault\n"
		"  enable-replication --vault DIR --vm NAME --disk NAME=PATH...\n"
		"                                            protect a VM (see 'ferry enable-replication --help')\n"
		"  status --vault DIR [--json]               state, lag, backlog, agent's last cycle per VM\n"
		"  recovery-points --vault DIR VM            list a VM's recovery points, oldest first\n"
		"  show --vault DIR VM                       a VM's settings, disks, resources, events\n"
		"  check --vault DIR [--read-data]           verify packs, index and maps\n"
		"  gc --vault DIR                            thin points and collect garbage now\n"
		"  test-failover --vault DIR VM [...]        a writable clone in an isolated network\n"
		"  test-failover-cleanup --vault DIR VM      remove it\n"
		"  failover --vault DIR VM [...]             fail over to the target; stops replication\n"
		"  change-recovery-point --vault DIR VM ...  before commit, pick another point\n"
		"  commit --vault DIR VM                     make the failover final\n"
		"  jobs --vault DIR                          history of failover operations\n"
		"  attach --vault NEWDIR --store URL        rebuild a vault's catalog from its store\n"
		"  reprotect-prepare --vault DIR --vm VM ... at the source: seed the way back\n"
		"  reprotect --vault DIR VM ...              at the target: replicate the clone back\n"
		"  failback --vault DIR VM                   at the source: rewrite what differs\n"
		"  resume-replication --vault DIR VM         at the target: protect forward again\n"
		"  resync --vault DIR VM                     ship only what differs from the vault\n"
		"\n"
		"  ferry --help | --version\n"
		"\n"
		"  --insecure-http (with any command) allows object storage over plain\n"
		"  http:// beyond this machine, as FERRY_INSECURE_HTTP=1 does.\n"
		"\n"
		"See ferry(1).\n");
}

/* ---- init ---- */

/* Any pack means the location is another vault's store. */
static int probe_one(const char *name, uint64_t size, void *userdata)
{
	(void)name;
	(void)size;
	(void)userdata;
	return -EEXIST;
}

static int cmd_init(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, 'V' },
		{ "chunk-size", required_argument, NULL, 'c' },
		{ "store", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const char *dir = NULL, *store = NULL;
	uint64_t chunk = FERRY_CHUNK_SIZE_DEFAULT;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
		switch (c) {
		case 'V':
			dir = optarg;
			break;
		case 'c':
			if (ferry_parse_u64(optarg, strlen(optarg), FERRY_CHUNK_SIZE_MAX, &chunk) ||
			    chunk < FERRY_CHUNK_SIZE_MIN || (chunk & (chunk - 1))) {
				log_error("--chunk-size must be a power of two between %u and %u",
					  FERRY_CHUNK_SIZE_MIN, FERRY_CHUNK_SIZE_MAX);
				return 2;
			}
			break;
		case 's':
			store = optarg;
			break;
		case 'h':
			printf("Usage: ferry init --vault DIR [--store URL] [--chunk-size BYTES]\n\n"
			       "Creates a vault in DIR (absent or empty): catalog.db, the store\n"
			       "(store/, or the location --store names), the embedded cache (cache/)\n"
			       "and agents/.\n"
			       "\n"
			       "  --store URL   keep the packs on object storage: azblob://CONTAINER[/PREFIX]\n"
			       "                or s3://BUCKET[/PREFIX] (credentials from the environment:\n"
			       "                AZURE_STORAGE_*, AWS_*; see docs/object-storage.md), or\n"
			       "                a directory; the catalog stays in DIR\n"
			       "  --chunk-size  a power of two, default %u\n",
			       FERRY_CHUNK_SIZE_DEFAULT);
			return 0;
		default:
			return 2;
		}
	}
	if (!dir || optind != argc) {
		log_error("usage: ferry init --vault DIR [--store URL] [--chunk-size BYTES]");
		return 2;
	}

	/* A local store is recorded absolute: the catalog resolves relative
	 * paths against the vault directory, not against where init ran. */
	_cleanup_free_ char *store_url = NULL;
	if (store) {
		store_url = strstr(store, "://") ? strdup(store) : absolute(store);
		if (!store_url)
			return log_error_errno(-ENOMEM, "out of memory"), 1;
		if (strlen(store_url) >= FERRY_URL_MAX)
			return log_error("store URL is too long"), 1;
	}

	/* Opening a remote location proves little (a SAS may not read
	 * container properties): a listing does, before anything is made,
	 * and shows whether the location is free. */
	if (store_url && strstr(store_url, "://")) {
		struct ferry_blobs *b;
		int q = ferry_blobs_open(store_url, 1, &b);
		if (q >= 0) {
			q = ferry_blobs_list(b, "packs/", probe_one, NULL);
			ferry_blobs_free(b);
		}
		/* A second catalog over one store would take the first one's
		 * packs for garbage. */
		if (q == -EEXIST) {
			log_error("store %s already holds a vault's packs; a new vault needs an "
				  "empty location",
				  store_url);
			return 1;
		}
		if (q < 0) {
			log_error("cannot create vault %s with store %s: %s", dir, store_url,
				  env_blobs_strerror(q));
			return 1;
		}
	}

	/* Only an absent directory or an empty one is undone after a failure:
	 * then everything in it is init's own. */
	struct stat st;
	int existed = stat(dir, &st) == 0, undo_ok = !existed && errno == ENOENT;
	if (existed && S_ISDIR(st.st_mode)) {
		DIR *d = opendir(dir);
		struct dirent *de;
		undo_ok = d != NULL;
		while (d && (de = readdir(d)))
			if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
				undo_ok = 0;
		if (d)
			closedir(d);
	}
	int r = ferry_vault_create(dir, (uint32_t)chunk, store_url);
	/* The store describes itself from the start (ferry attach). */
	if (r >= 0)
		r = record_vault_init(dir);
	if (r == -ENOTEMPTY) {
		log_error("%s exists and is not empty; a vault needs a new directory", dir);
		return 1;
	}
	if (r < 0) {
		if (undo_ok)
			undo_vault_dir(dir, existed);
		if (store_url)
			log_error("cannot create vault %s with store %s: %s", dir, store_url,
				  env_blobs_strerror(r));
		else
			log_error_errno(r, "cannot create vault %s", dir);
		return 1;
	}
	printf("Created vault %s (chunk size %llu, store %s)\n", dir, (unsigned long long)chunk,
	       store_url ?: "store/ in the vault");
	return 0;
}

/* ---- enable-replication ---- */

static const char enable_help[] =
	"Usage: ferry enable-replication --vault DIR --vm NAME --disk NAME=PATH [--disk ...]\n"
	"         [--tracker scan|qemu] [--qmp SOCKET] [--nbd-socket SOCKET] [--interval S]\n"
	"         [--cache URL] [--crash-interval SECONDS] [--app-interval SECONDS]\n"
	"         [--retention SECONDS] [--source-group G] [--source-network N]\n"
	"         [--source-subnet S] [--target-group G] [--target-network N]\n"
	"         [--target-subnet S] [--availability-set A] [--agent-config FILE]\n"
	"\n"
	"Registers a VM for replication, creates its target resources in the catalog\n"
	"and writes the agent's configuration file (default DIR/agents/NAME.conf).\n"
	"\n"
	"  --disk NAME=PATH        a disk, in source order; PATH is where the agent reads it\n"
	"                          (qemu tracker: NAME=NODE, the disk's block node name)\n"
	"  --tracker T             scan (default): read the disk files; qemu: a running\n"
	"                          qemu's dirty bitmaps, continuous (ferry-agent(8))\n"
	"  --qmp SOCKET            qemu tracker: a QMP socket of the VM's qemu for Ferry alone\n"
	"  --nbd-socket SOCKET     qemu tracker: the socket of an NBD server qemu already runs\n"
	"                          (default: the agent runs qemu's NBD server itself)\n"
	"  --interval S            seconds between the agent's cycles (default: the crash\n"
	"                          interval, or 60, for scan; 2 for qemu)\n"
	"  --cache URL             where segments travel (default: DIR/cache)\n"
	"  --crash-interval S      crash-consistent point frequency (default 300; 0 = every cycle)\n"
	"  --app-interval S        app-consistent point frequency (default 0 = off)\n"
	"  --retention S           how long points are kept (default 86400)\n"
	"  --source-group G        source resource group (default 'default')\n"
	"  --source-network N      source virtual network (default 'default')\n"
	"  --source-subnet S       source subnet (default 'default')\n"
	"  --target-group G        default: SOURCE-GROUP-ferry\n"
	"  --target-network N      default: SOURCE-NETWORK-ferry\n"
	"  --target-subnet S       default: SOURCE-SUBNET-ferry\n"
	"  --availability-set A    default: VM-avset-ferry\n"
	"  --agent-config FILE     where to write the agent configuration\n"
	"  --cpus N                the VM's virtual CPUs (default 1)\n"
	"  --memory MIB            the VM's memory (default 1024)\n"
	"  --nic mac=MAC[,ip=ADDR/PREFIX][,model=M]\n"
	"                          a network interface, in source order (repeat)\n";

static int parse_enable(int argc, char **argv, struct enable_args *a)
{
	enum {
		O_VAULT = 0x100,
		O_VM,
		O_DISK,
		O_CACHE,
		O_CRASH,
		O_APP,
		O_RET,
		O_SG,
		O_SN,
		O_SS,
		O_TG,
		O_TN,
		O_TS,
		O_AS,
		O_AC,
		O_CPUS,
		O_MEM,
		O_NIC,
		O_TRACKER,
		O_QMP,
		O_NBD,
		O_INTERVAL
	};
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, O_VAULT },
		{ "vm", required_argument, NULL, O_VM },
		{ "disk", required_argument, NULL, O_DISK },
		{ "cache", required_argument, NULL, O_CACHE },
		{ "crash-interval", required_argument, NULL, O_CRASH },
		{ "app-interval", required_argument, NULL, O_APP },
		{ "retention", required_argument, NULL, O_RET },
		{ "source-group", required_argument, NULL, O_SG },
		{ "source-network", required_argument, NULL, O_SN },
		{ "source-subnet", required_argument, NULL, O_SS },
		{ "target-group", required_argument, NULL, O_TG },
		{ "target-network", required_argument, NULL, O_TN },
		{ "target-subnet", required_argument, NULL, O_TS },
		{ "availability-set", required_argument, NULL, O_AS },
		{ "agent-config", required_argument, NULL, O_AC },
		{ "cpus", required_argument, NULL, O_CPUS },
		{ "memory", required_argument, NULL, O_MEM },
		{ "nic", required_argument, NULL, O_NIC },
		{ "tracker", required_argument, NULL, O_TRACKER },
		{ "qmp", required_argument, NULL, O_QMP },
		{ "nbd-socket", required_argument, NULL, O_NBD },
		{ "interval", required_argument, NULL, O_INTERVAL },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const uint64_t year = 366ULL * 86400;
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
		/* Each plain option fills one field. */
		const struct {
			int opt;
			const char **str;
			uint64_t *num;
		} fields[] = {
			/* clang-format off */
			{ O_VAULT, &a->vault, NULL },
			{ O_VM, &a->vm, NULL },
			{ O_CACHE, &a->cache, NULL },
			{ O_SG, &a->source_group, NULL },
			{ O_SN, &a->source_network, NULL },
			{ O_SS, &a->source_subnet, NULL },
			{ O_TG, &a->target_group, NULL },
			{ O_TN, &a->target_network, NULL },
			{ O_TS, &a->target_subnet, NULL },
			{ O_AS, &a->avset, NULL },
			{ O_AC, &a->agent_config, NULL },
			{ O_TRACKER, &a->tracker, NULL },
			{ O_QMP, &a->qmp, NULL },
			{ O_NBD, &a->nbd_socket, NULL },
			{ O_INTERVAL, NULL, &a->interval },
			{ O_CRASH, NULL, &a->crash },
			{ O_APP, NULL, &a->app },
			{ O_RET, NULL, &a->retention },
			{ O_CPUS, NULL, &a->cpus },
			{ O_MEM, NULL, &a->memory },
			/* clang-format on */
		};
		uint64_t *num = NULL;
		const char **str = NULL;
		for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
			if (fields[i].opt == c) {
				str = fields[i].str;
				num = fields[i].num;
			}
		if (str) {
			*str = optarg;
			continue;
		}
		if (num) {
			if (ferry_parse_u64(optarg, strlen(optarg), 100 * year, num) < 0) {
				log_error("%s wants a number, not '%s'", argv[optind - 1], optarg);
				return -EINVAL;
			}
			continue;
		}
		switch (c) {
		case O_NIC:
			if (a->nnics == MAX_CLI_NICS) {
				log_error("at most %d NICs per VM", MAX_CLI_NICS);
				return -EINVAL;
			}
			a->nics[a->nnics++] = optarg;
			continue;
		case O_DISK: {
			char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg || !eq[1]) {
				log_error("--disk wants NAME=PATH, not '%s'", optarg);
				return -EINVAL;
			}
			if (a->ndisks == MAX_CLI_DISKS) {
				log_error("at most %d disks per VM", MAX_CLI_DISKS);
				return -EINVAL;
			}
			*eq = 0;
			a->disk_names[a->ndisks] = optarg;
			a->disk_paths[a->ndisks++] = eq + 1;
			continue;
		}
		case 'h':
			fputs(enable_help, stdout);
			return 1;
		default:
			return -EINVAL;
		}
	}
	if (optind != argc || !a->vault || !a->vm || a->ndisks == 0) {
		log_error("usage: ferry enable-replication --vault DIR --vm NAME --disk NAME=PATH "
			  "... (see --help)");
		return -EINVAL;
	}
	return 0;
}

/* What parse_enable cannot see alone; also for callers that fill the
 * arguments themselves. */
static int check_enable_args(const struct enable_args *a)
{
	if (!a->vault || !a->vm || a->ndisks == 0 || a->ndisks > MAX_CLI_DISKS ||
	    a->nnics > MAX_CLI_NICS) {
		log_error("enable-replication wants a vault, a VM and 1 to %d disks",
			  MAX_CLI_DISKS);
		return -EINVAL;
	}
	if (a->retention == 0) {
		log_error("--retention must be at least one second");
		return -EINVAL;
	}
	if (a->cpus == 0 || a->cpus > 1024 || a->memory < 16 || a->memory > (1 << 24)) {
		log_error("--cpus wants 1-1024 and --memory 16 MiB or more");
		return -EINVAL;
	}
	int qemu = a->tracker && strcmp(a->tracker, "qemu") == 0;
	if (a->tracker && !qemu && strcmp(a->tracker, "scan") != 0) {
		log_error("--tracker wants scan or qemu, not '%s'", a->tracker);
		return -EINVAL;
	}
	if (qemu && (!a->qmp || !*a->qmp)) {
		log_error("--tracker qemu wants --qmp SOCKET: a QMP socket of the VM's qemu that "
			  "Ferry may use alone");
		return -EINVAL;
	}
	if (!qemu && (a->qmp || a->nbd_socket)) {
		log_error("--qmp and --nbd-socket go with --tracker qemu");
		return -EINVAL;
	}
	if (a->interval > AGENTCONF_MAX_INTERVAL) {
		log_error("--interval wants 0 to %u seconds", AGENTCONF_MAX_INTERVAL);
		return -EINVAL;
	}
	for (size_t i = 0; i < a->nnics; i++) {
		struct ferry_vmdef_nic_spec nic;
		if (ferry_vmdef_nic_parse(a->nics[i], &nic) < 0) {
			log_error("--nic wants a unicast mac=XX:XX:XX:XX:XX:XX[,ip=A.B.C.D/PREFIX]"
				  "[,model=M], each key once, not '%s'",
				  a->nics[i]);
			return -EINVAL;
		}
	}
	const char *names[] = {
		a->vm,           a->source_group,   a->source_network, a->source_subnet,
		a->target_group, a->target_network, a->target_subnet,  a->avset
	};
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (names[i] && !ferry_name_valid(names[i])) {
			log_error("'%s' is not a valid name: use 1-64 of [A-Za-z0-9._-], not "
				  "starting with '.' or '-'",
				  names[i]);
			return -EINVAL;
		}
	for (size_t i = 0; i < a->ndisks; i++) {
		if (!ferry_name_valid(a->disk_names[i])) {
			log_error("disk name '%s' is not valid: use 1-64 of [A-Za-z0-9._-]",
				  a->disk_names[i]);
			return -EINVAL;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(a->disk_names[i], a->disk_names[j]) == 0) {
				log_error("disk name '%s' given twice", a->disk_names[i]);
				return -EINVAL;
			}
		if (strpbrk(a->disk_paths[i], "\n\r")) {
			log_error("disk path of '%s' contains a line break", a->disk_names[i]);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * A scan disk that is here already must be one the agent can replicate:
 * not empty, not over FERRY_DISK_SIZE_MAX. One that is not here (the source
 * is another machine) or cannot be opened is the agent's to judge.
 */
static int check_disk_size(const char *name, const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return 0;
	struct stat st;
	if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
		return 0;
	off_t size = lseek(fd, 0, SEEK_END);
	if (size < 0)
		return 0;
	char p[4 * FERRY_PATH_MAX];
	log_escape(path, p, sizeof(p));
	if (size == 0) {
		log_error("disk '%s' (%s) is empty: there is nothing to replicate; give the path "
			  "of the image or device the VM uses",
			  name, p);
		return -EINVAL;
	}
	if ((uint64_t)size > FERRY_DISK_SIZE_MAX) {
		log_error("disk '%s' (%s) is larger than the %llu bytes a replicated disk may be",
			  name, p, (unsigned long long)FERRY_DISK_SIZE_MAX);
		return -EFBIG;
	}
	return 0;
}

static void free_paths(char *(*paths)[MAX_CLI_DISKS])
{
	for (size_t i = 0; i < MAX_CLI_DISKS; i++)
		free((*paths)[i]);
}

/* Prints a path as one word to the shell, quoted where it has to be. */
static void print_shell_word(const char *s)
{
	if (*s && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			    "0123456789/._-+,:@%=") == strlen(s)) {
		fputs(s, stdout);
		return;
	}
	putchar('\'');
	for (; *s; s++)
		if (*s == '\'')
			fputs("'\\''", stdout);
		else
			putchar(*s);
	putchar('\'');
}

int enable_replication(const struct enable_args *a)
{
	int r = check_enable_args(a);
	if (r < 0)
		return r;
	/* Before anything is made: a refusal changes nothing. */
	int scan = !a->tracker || strcmp(a->tracker, "scan") == 0;
	for (size_t i = 0; scan && i < a->ndisks; i++) {
		r = check_disk_size(a->disk_names[i], a->disk_paths[i]);
		if (r < 0)
			return r;
	}

	/* Opened by its absolute path, so every path recorded is absolute. */
	_cleanup_free_ char *vault_abs = realpath(a->vault, NULL);
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	r = open_vault(vault_abs ?: a->vault, 0, &v);
	if (r < 0)
		return r;

	/* Defaults follow the source settings, as the reference service does. */
	char tg[80], tn[80], ts[80], as[80];
	const char *sg = a->source_group ?: "default", *sn = a->source_network ?: "default",
		   *ss = a->source_subnet ?: "default";
	snprintf(tg, sizeof(tg), "%.64s", a->target_group ?: "");
	snprintf(tn, sizeof(tn), "%.64s", a->target_network ?: "");
	snprintf(ts, sizeof(ts), "%.64s", a->target_subnet ?: "");
	snprintf(as, sizeof(as), "%.64s", a->avset ?: "");
	if (!a->target_group)
		snprintf(tg, sizeof(tg), "%s-ferry", sg);
	if (!a->target_network)
		snprintf(tn, sizeof(tn), "%s-ferry", sn);
	if (!a->target_subnet)
		snprintf(ts, sizeof(ts), "%s-ferry", ss);
	if (!a->avset)
		snprintf(as, sizeof(as), "%s-avset-ferry", a->vm);

	_cleanup_free_ char *cache = NULL, *conf = NULL, *state = NULL;
	/* The embedded default: the vault's own cache directory. */
	if (a->cache)
		cache = strchr(a->cache, ':') ? strdup(a->cache) : absolute(a->cache);
	else if (asprintf(&cache, "%s/cache", vault_abs) < 0)
		cache = NULL;
	if (!cache)
		return log_error("out of memory"), -ENOMEM;
	if (strlen(cache) >= FERRY_URL_MAX)
		return log_error("cache URL is too long"), -ENAMETOOLONG;

	struct ferry_cache *fc;
	r = ferry_cache_open(cache, 1, &fc);
	if (r < 0)
		return log_error_errno(r, "cannot open cache %s", cache);
	ferry_cache_free(fc);

	if (a->agent_config)
		conf = absolute(a->agent_config);
	else if (asprintf(&conf, "%s/agents/%s.conf", vault_abs, a->vm) < 0)
		conf = NULL;
	if (asprintf(&state, "%s/agents/%s.state", vault_abs, a->vm) < 0)
		state = NULL;
	if (!conf || !state)
		return log_error("out of memory"), -ENOMEM;

	/* A qemu disk is a node name, recorded as it is; a scan disk a path,
	 * made absolute. */
	int qemu = a->tracker && strcmp(a->tracker, "qemu") == 0;
	_cleanup_(free_paths) char *abs_paths[MAX_CLI_DISKS] = { 0 };
	for (size_t i = 0; i < a->ndisks; i++)
		if (!(abs_paths[i] = qemu ? strdup(a->disk_paths[i]) :
					    absolute(a->disk_paths[i])) ||
		    strlen(abs_paths[i]) >= FERRY_PATH_MAX)
			return log_error("disk path of '%s' is unusable", a->disk_names[i]),
			       -EINVAL;

	_cleanup_free_ char *qmp = a->qmp ? absolute(a->qmp) : NULL,
			    *nbd = a->nbd_socket ? absolute(a->nbd_socket) : NULL;
	if ((a->qmp && !qmp) || (a->nbd_socket && !nbd))
		return log_error("out of memory"), -ENOMEM;

	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm vm = {
		.state = FERRY_VM_INITIAL,
		.crash_interval_s = (int64_t)a->crash,
		.app_interval_s = (int64_t)a->app,
		.retention_s = (int64_t)a->retention,
		.created_ns = ferry_now_ns(),
	};
	snprintf(vm.name, sizeof(vm.name), "%s", a->vm);
	snprintf(vm.cache_url, sizeof(vm.cache_url), "%s", cache);

	char store_url[FERRY_URL_MAX], map[200], rmap[200];
	snprintf(store_url, sizeof(store_url), "%s", ferry_store_url(ferry_vault_store(v)));
	snprintf(map, sizeof(map), "%s->%s", sn, tn);
	snprintf(rmap, sizeof(rmap), "%s->%s", tn, sn);
	const char *const res[][2] = {
		{ "source-group", sg },          { "source-network", sn },
		{ "source-subnet", ss },         { "target-group", tg },
		{ "target-network", tn },        { "target-subnet", ts },
		{ "network-mapping", map },      { "reverse-network-mapping", rmap },
		{ "availability-set", as },      { "cache", cache },
		{ "target-storage", store_url }, { "agent-config", conf },
	};

	r = ferry_catalog_begin(c);
	if (r >= 0) {
		r = ferry_catalog_vm_add(c, &vm);
		if (r == -EEXIST)
			log_error("VM '%s' is already protected in this vault", a->vm);
		for (size_t i = 0; r >= 0 && i < a->ndisks; i++) {
			struct ferry_disk d = { .vm_id = vm.id, .idx = (uint16_t)i };
			snprintf(d.name, sizeof(d.name), "%s", a->disk_names[i]);
			snprintf(d.source_path, sizeof(d.source_path), "%s", abs_paths[i]);
			r = ferry_catalog_disk_add(c, &d);
		}
		for (size_t i = 0; r >= 0 && i < ARRAY_SIZE(res); i++)
			r = ferry_catalog_resource_set(c, vm.id, res[i][0], res[i][1]);
		char num[32], kind[16], canon[FERRY_VMDEF_NIC_SPEC_SIZE];
		snprintf(num, sizeof(num), "%llu", (unsigned long long)a->cpus);
		if (r >= 0)
			r = ferry_catalog_resource_set(c, vm.id, "vm-cpus", num);
		snprintf(num, sizeof(num), "%llu", (unsigned long long)a->memory);
		if (r >= 0)
			r = ferry_catalog_resource_set(c, vm.id, "vm-memory-mib", num);
		for (size_t i = 0; r >= 0 && i < a->nnics; i++) {
			snprintf(kind, sizeof(kind), "nic.%zu", i);
			struct ferry_vmdef_nic_spec nic;
			r = ferry_vmdef_nic_parse(a->nics[i], &nic);
			if (r >= 0)
				r = ferry_vmdef_nic_format(&nic, canon, sizeof(canon));
			if (r >= 0)
				r = ferry_catalog_resource_set(c, vm.id, kind, canon);
		}
		if (r >= 0)
			r = ferry_catalog_event_add(c, vm.id, "info", "replication enabled");
		/* The agent's file comes before the commit: a VM in the catalog
		 * always has its configuration. */
		struct agent_disk disks[MAX_CLI_DISKS];
		for (size_t i = 0; i < a->ndisks; i++)
			disks[i] = (struct agent_disk){ (char *)a->disk_names[i], abs_paths[i] };
		const struct agentconf ac = {
			.vm = (char *)a->vm,
			.cache = cache,
			.state = state,
			.interval = a->interval ? a->interval :
				    qemu        ? 2 :
				    a->crash    ? a->crash :
						  60,
			.chunk_size = ferry_vault_chunk_size(v),
			.has_chunk_size = 1,
			.tracker = qemu ? AGENTCONF_TRACKER_QEMU : AGENTCONF_TRACKER_SCAN,
			.qmp = qmp,
			.nbd_socket = nbd,
			.disks = disks,
			.ndisks = a->ndisks,
		};
		if (r >= 0)
			r = ferry_catalog_resource_set(c, vm.id, "tracker", qemu ? "qemu" : "scan");
		if (r >= 0)
			r = agentconf_write(&ac, conf, "written by ferry enable-replication");
		if (r >= 0)
			r = ferry_catalog_commit(c);
		else
			ferry_catalog_rollback(c);
	}
	if (r < 0) {
		if (r != -EEXIST)
			log_error_errno(r, "cannot enable replication of VM '%s'", a->vm);
		return r;
	}
	/* The store must know the VM too: ferry attach rebuilds it from there.
	 * Its record is an ingest of its own (ingest.h), after the commit. */
	r = record_vm_write(v, vm.id);
	if (r < 0)
		return log_error_errno(
			r,
			"VM '%s' is enabled, but its record could not be stored in %s "
			"(ferry attach would not find it there until its next change)",
			a->vm, a->vault);

	printf("Replication enabled for VM %s (%zu disk%s)\n", a->vm, a->ndisks,
	       a->ndisks == 1 ? "" : "s");
	printf("  target resource group  %s\n", tg);
	printf("  target network         %s (mapping %s, reverse %s)\n", tn, map, rmap);
	printf("  target subnet          %s\n", ts);
	printf("  availability set       %s\n", as);
	printf("  cache                  %s\n", cache);
	printf("  target storage         %s\n", store_url);
	printf("  agent configuration    %s\n", conf);
	printf("Start the agent at the source: ferry-agent --config %s\n", conf);
	/* The units' instances are systemd-escaped paths (contrib/systemd/). */
	printf("  or under systemd: systemctl enable --now \"ferry-agent@$(systemd-escape --path ");
	print_shell_word(conf);
	printf(").service\"\n");
	printf("Start the replicator at the target under systemd: systemctl enable --now "
	       "\"ferry-replicator@$(systemd-escape --path ");
	print_shell_word(vault_abs ?: a->vault);
	printf(").service\"\n");
	return 0;
}

static int cmd_enable(int argc, char **argv)
{
	struct enable_args a = ENABLE_ARGS_INIT;
	int r = parse_enable(argc, argv, &a);
	if (r != 0)
		return r > 0 ? 0 : 2;
	/* Bad arguments are a usage error; enable_replication checks them too. */
	if (check_enable_args(&a) < 0)
		return 2;
	return enable_replication(&a) < 0 ? 1 : 0;
}

/* ---- status ---- */

struct status_ctx {
	struct ferry_vault *v;
	int json;
	json_object *arr;
	int64_t now;
};

struct last_points {
	struct ferry_point last, last_app;
	int have, have_app;
	unsigned count;
};

static int note_last(const struct ferry_point *p, void *userdata)
{
	struct last_points *lp = userdata;
	lp->last = *p;
	lp->have = 1;
	lp->count++;
	if (p->consistency == FERRY_CONSISTENCY_APP) {
		lp->last_app = *p;
		lp->have_app = 1;
	}
	return 0;
}

static int res_json(const char *kind, const char *value, void *userdata)
{
	json_object_object_add(userdata, kind, json_object_new_string(value));
	return 0;
}

static int res_text(const char *kind, const char *value, void *userdata)
{
	char k[256], v[4 * FERRY_URL_MAX];
	if (strcmp(kind, "agent-config") != 0)
		printf("    %-24s %s\n", log_escape(kind, k, sizeof(k)),
		       log_escape(value, v, sizeof(v)));
	return 0;
}

static const char *failover_kind(const struct ferry_failover *f)
{
	if (f->kind == FERRY_FAILOVER_TEST)
		return "test failover";
	return f->state == FERRY_FAILOVER_COMMITTED ? "failover (committed)" : "failover";
}

static int failover_text(const struct ferry_failover *f, void *userdata)
{
	printf("  %-14s %s from %s on network %s/%s\n", failover_kind(f), f->name, f->point_name,
	       f->network, f->subnet);
	return 0;
}

static int failover_json(const struct ferry_failover *f, void *userdata)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(f->name));
	json_object_object_add(o, "kind", json_object_new_string(failover_kind(f)));
	json_object_object_add(o, "recovery_point", json_object_new_string(f->point_name));
	json_object_object_add(o, "network", json_object_new_string(f->network));
	json_object_object_add(o, "subnet", json_object_new_string(f->subnet));
	json_object_array_add(userdata, o);
	return 0;
}

/* What the agent last said about itself (its status blob in the cache). */
struct agent_report {
	int have; /* 1: st is valid; 0: none; <0: -errno reading it */
	struct ferry_agent_status st;
	int64_t age_ns; /* now minus when it was written */
	int silent;
};

/* An agent is silent once its status is older than a few of its cycles
 * (and their duration), and never sooner than half a minute: a status
 * is put once per cycle, and one put may be slow or fail. */
static void agent_report_judge(struct agent_report *a, int64_t now)
{
	if (a->have <= 0)
		return;
	a->age_ns = MAX(now - a->st.written_ns, INT64_C(0));
	/* In double: the figures come from the source and may be anything. */
	double cycle_s = (double)a->st.interval_s + (double)a->st.duration_ns / 1e9;
	a->silent = (double)a->age_ns / 1e9 > MAX(3 * cycle_s, 30.0);
}

static const char *tracker_name(uint8_t t)
{
	return t == FERRY_TRACKER_SCAN ? "scan" : t == FERRY_TRACKER_QEMU ? "qemu" : "unknown";
}

static json_object *json_time(int64_t ns)
{
	char buf[32];
	if (ns <= 0)
		return NULL;
	ferry_format_time(ns, buf, sizeof(buf));
	return json_object_new_string(buf);
}

/* Seconds with millisecond resolution, printed as such. */
static json_object *json_seconds(int64_t ns)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%.3f", (double)ns / 1e9);
	return json_object_new_double_s((double)ns / 1e9, buf);
}

static json_object *json_u64(uint64_t v)
{
	return v == FERRY_STATUS_UNKNOWN ? NULL : json_object_new_int64((int64_t)v);
}

static json_object *agent_json(const struct agent_report *a)
{
	json_object *o = json_object_new_object();
	const struct ferry_agent_status *st = &a->st;
	json_object_object_add(o, "tracker", json_object_new_string(tracker_name(st->tracker)));
	json_object_object_add(o, "updated", json_time(st->written_ns));
	json_object_object_add(o, "updated_seconds_ago", json_seconds(a->age_ns));
	json_object_object_add(o, "interval_seconds", json_object_new_int64(st->interval_s));
	json_object_object_add(o, "silent", json_object_new_boolean(a->silent));
	json_object_object_add(o, "error",
			       st->error ? json_object_new_string(strerror(st->error)) : NULL);
	json_object_object_add(o, "error_message",
			       st->message[0] ? json_object_new_string(st->message) : NULL);
	json_object_object_add(o, "cycle", json_object_new_int64((int64_t)st->cycle));
	json_object_object_add(o, "last_marker", json_time(st->marker_ns));
	json_object_object_add(o, "last_cycle_start", json_time(st->started_ns));
	json_object_object_add(o, "last_cycle_read_bytes",
			       st->cycle ? json_object_new_int64((int64_t)st->read_bytes) : NULL);
	return o;
}

static void agent_text(const struct agent_report *a)
{
	char b1[32], b2[32], b3[32], when[32], age[32];
	const struct ferry_agent_status *st = &a->st;
	const char *none = a->have < 0 ? "unknown (the agent's status is unreadable)" :
					 "unknown (no status from the agent yet)";

	if (a->have <= 0)
		printf("  at the source  %s\n", none);
	else if (st->source_waiting_bytes == FERRY_STATUS_UNKNOWN)
		printf("  at the source  unknown (the %s tracker cannot tell)\n",
		       tracker_name(st->tracker));
	else {
		format_bytes(st->source_waiting_bytes, b1, sizeof(b1));
		printf("  at the source  %s written and not shipped yet\n", b1);
	}
	if (a->have <= 0 || st->cycle == 0)
		printf("  last cycle     %s\n", a->have > 0 ? "none completed yet" : none);
	else {
		format_bytes(st->shipped_bytes, b1, sizeof(b1));
		format_bytes(st->read_bytes, b2, sizeof(b2));
		ferry_format_time(st->started_ns, when, sizeof(when));
		snprintf(b3, sizeof(b3), "%.1f s", (double)st->duration_ns / 1e9);
		printf("  last cycle     #%llu at %s: %s, %s shipped in %llu segment%s, %s read\n",
		       (unsigned long long)st->cycle, when, b3, b1,
		       (unsigned long long)st->segments, st->segments == 1 ? "" : "s", b2);
	}
	if (a->have <= 0)
		return;
	ferry_format_time(st->written_ns, when, sizeof(when));
	format_age(a->age_ns, age, sizeof(age));
	/* What the agent said, not only its errno: a disk that changed size
	 * must be read here, not in a log at the source. */
	char msg[4 * sizeof(st->message)];
	if (a->silent)
		printf("  agent          silent since %s (%s; it reports every %us)\n", when, age,
		       st->interval_s);
	else if (st->error)
		printf("  agent          last cycle failed %s ago: %s\n", age,
		       st->message[0] ? log_escape(st->message, msg, sizeof(msg)) :
					strerror(st->error));
	else
		printf("  agent          %s tracker, reported %s ago, cycles every %us\n",
		       tracker_name(st->tracker), age, st->interval_s);
}

/* The VM's latest resync (catalog) and who holds its agent lease (cache). */
struct resync_report {
	int have; /* rs is valid */
	struct ferry_vm_resync rs;
	int lease; /* 1: l is valid; 0: none; <0: -errno reading it */
	struct ferry_lease l;
};

static void resync_report_read(struct ferry_catalog *c, const struct ferry_vm *vm,
			       struct ferry_cache *cache, struct resync_report *rr)
{
	rr->have = ferry_catalog_resync_get(c, vm->id, &rr->rs) >= 0;
	if (cache) {
		int r = ferry_control_get_lease(cache, vm->name, &rr->l);
		rr->lease = r >= 0 ? 1 : r == -ENOENT ? 0 : r;
	}
}

static void lease_id_hex(const struct ferry_lease *l, char buf[2 * FERRY_LEASE_ID_SIZE + 1])
{
	for (size_t i = 0; i < FERRY_LEASE_ID_SIZE; i++)
		snprintf(buf + 2 * i, 3, "%02x", l->id[i]);
}

static void resync_json(json_object *o, const struct resync_report *rr, int64_t now)
{
	json_object *rj = NULL, *lj = NULL;
	if (rr->have) {
		rj = json_object_new_object();
		json_object_object_add(rj, "epoch", json_object_new_int64((int64_t)rr->rs.epoch));
		json_object_object_add(rj, "requested", json_time(rr->rs.requested_ns));
		json_object_object_add(rj, "completed", json_time(rr->rs.done_ns));
		json_object_object_add(rj, "base_seq",
				       json_object_new_int64((int64_t)rr->rs.base_seq));
		json_object_object_add(rj, "reason", json_object_new_string(rr->rs.reason));
	}
	if (rr->lease > 0) {
		char id[2 * FERRY_LEASE_ID_SIZE + 1];
		lease_id_hex(&rr->l, id);
		lj = json_object_new_object();
		json_object_object_add(lj, "identity", json_object_new_string(id));
		json_object_object_add(lj, "host", json_object_new_string(rr->l.host));
		json_object_object_add(lj, "pid", json_object_new_int64(rr->l.pid));
		json_object_object_add(lj, "renewed", json_time(rr->l.written_ns));
		json_object_object_add(lj, "expires", json_time(rr->l.expires_ns));
		json_object_object_add(lj, "expired",
				       json_object_new_boolean(rr->l.expires_ns <= now));
	}
	json_object_object_add(o, "resync", rj);
	json_object_object_add(o, "agent_lease", lj);
	if (rr->lease < 0)
		json_object_object_add(o, "agent_lease_error",
				       json_object_new_string(strerror(-rr->lease)));
}

static void resync_text(const struct ferry_vm *vm, const struct resync_report *rr, int64_t now)
{
	char when[32], age[32], reason[4 * sizeof(rr->rs.reason)];
	if (rr->have &&
	    (vm->state == FERRY_VM_RESYNC_REQUIRED || vm->state == FERRY_VM_RESYNCING)) {
		ferry_format_time(rr->rs.requested_ns, when, sizeof(when));
		format_age(now - rr->rs.requested_ns, age, sizeof(age));
		printf("  resync         #%llu requested %s (%s ago)%s: %s\n",
		       (unsigned long long)rr->rs.epoch, when, age,
		       vm->state == FERRY_VM_RESYNCING ? ", the agent's chain resumed" :
							 ", waiting for the agent",
		       log_escape(rr->rs.reason, reason, sizeof(reason)));
	}
}

static void lease_text(const struct resync_report *rr, int64_t now)
{
	char id[2 * FERRY_LEASE_ID_SIZE + 1], when[32], age[32];
	if (rr->lease < 0) {
		printf("  agent lease    unreadable: %s\n", strerror(-rr->lease));
		return;
	}
	if (rr->lease == 0)
		return;
	lease_id_hex(&rr->l, id);
	ferry_format_time(rr->l.expires_ns, when, sizeof(when));
	format_age(rr->l.expires_ns > now ? rr->l.expires_ns - now : now - rr->l.expires_ns, age,
		   sizeof(age));
	printf("  agent lease    host %s, pid %u, state %.8s, %s %s (%s %s)\n", rr->l.host,
	       (unsigned)rr->l.pid, id, rr->l.expires_ns > now ? "until" : "expired", when, age,
	       rr->l.expires_ns > now ? "left" : "ago");
}

static int status_vm(const struct ferry_vm *vm, void *userdata)
{
	struct status_ctx *s = userdata;
	struct ferry_catalog *c = ferry_vault_catalog(s->v);
	struct last_points lp = { 0 };
	int r = ferry_catalog_point_list(c, vm->id, note_last, &lp);
	if (r < 0)
		return r;

	/* enable-replication records the tracker; VMs from before it scan. */
	char tracker[32];
	if (ferry_catalog_resource_get(c, vm->id, "tracker", tracker, sizeof(tracker)) < 0)
		snprintf(tracker, sizeof(tracker), "scan");

	uint64_t pending = 0;
	size_t nseg = 0;
	int cache_ok = 0;
	struct agent_report agent = { 0 };
	struct resync_report rr = { 0 };
	struct ferry_cache *cache;
	if (ferry_cache_open(vm->cache_url, 0, &cache) >= 0) {
		uint64_t *seqs = NULL;
		cache_ok = ferry_cache_list_segments(cache, vm->name, &seqs, &nseg, &pending) >= 0;
		free(seqs);
		r = ferry_cache_get_status(cache, vm->name, &agent.st);
		agent.have = r >= 0 ? 1 : r == -ENOENT ? 0 : r;
		resync_report_read(c, vm, cache, &rr);
		ferry_cache_free(cache);
	} else
		resync_report_read(c, vm, NULL, &rr);
	agent_report_judge(&agent, s->now);
	double pct = vm->initial_total_bytes ? 100.0 * (double)vm->initial_done_bytes /
						       (double)vm->initial_total_bytes :
					       0.0;
	int64_t rpo = vm->marker_ns ? s->now - vm->marker_ns : -1;
	int cycle_known = agent.have > 0 && agent.st.cycle > 0;

	if (s->json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "vm", json_object_new_string(vm->name));
		json_object_object_add(o, "state",
				       json_object_new_string(ferry_vm_state_name(vm->state)));
		if (vm->state == FERRY_VM_INITIAL)
			json_object_object_add(o, "initial_replication_percent",
					       json_object_new_double(pct));
		if (vm->error[0])
			json_object_object_add(o, "error", json_object_new_string(vm->error));
		json_object_object_add(o, "recovery_points", json_object_new_int(lp.count));
		json_object_object_add(o, "last_recovery_point",
				       lp.have ? json_object_new_string(lp.last.name) : NULL);
		json_object_object_add(o, "last_app_consistent_point",
				       lp.have_app ? json_object_new_string(lp.last_app.name) :
						     NULL);
		json_object_object_add(o, "rpo_seconds",
				       rpo >= 0 ? json_object_new_int64(rpo / 1000000000) : NULL);
		json_object_object_add(o, "applied_seq",
				       json_object_new_int64((int64_t)vm->applied_seq));
		json_object_object_add(o, "pending_segments",
				       cache_ok ? json_object_new_int64((int64_t)nseg) : NULL);
		json_object_object_add(o, "pending_bytes",
				       cache_ok ? json_object_new_int64((int64_t)pending) : NULL);
		json_object_object_add(o, "tracker", json_object_new_string(tracker));
		json_object_object_add(o, "lag_seconds",
				       rpo >= 0 ? json_seconds(MAX(rpo, INT64_C(0))) : NULL);
		json_object_object_add(o, "source_pending_bytes",
				       agent.have > 0 ? json_u64(agent.st.source_waiting_bytes) :
							NULL);
		json_object_object_add(o, "last_cycle_seconds",
				       cycle_known ? json_seconds(agent.st.duration_ns) : NULL);
		json_object_object_add(
			o, "last_cycle_bytes",
			cycle_known ? json_object_new_int64((int64_t)agent.st.shipped_bytes) :
				      NULL);
		json_object_object_add(
			o, "last_cycle_segments",
			cycle_known ? json_object_new_int64((int64_t)agent.st.segments) : NULL);
		json_object_object_add(o, "agent", agent.have > 0 ? agent_json(&agent) : NULL);
		resync_json(o, &rr, s->now);
		if (agent.have < 0)
			json_object_object_add(o, "agent_status_error",
					       json_object_new_string(strerror(-agent.have)));
		json_object *res = json_object_new_object();
		r = ferry_catalog_resource_list(c, vm->id, res_json, res);
		json_object_object_add(o, "resources", res);
		json_object *fo = json_object_new_array();
		if (r >= 0)
			r = ferry_catalog_failover_list(c, vm->id, failover_json, fo);
		json_object_object_add(o, "failovers", fo);
		json_object_array_add(s->arr, o);
		return r;
	}

	char when[32], age[32], bytes[32], error[4 * sizeof(vm->error)];
	char url[4 * sizeof(vm->cache_url)];
	printf("%s\n", vm->name);
	if (vm->state == FERRY_VM_INITIAL)
		printf("  state          initial replication, %.1f%%\n", pct);
	else
		printf("  state          %s\n", ferry_vm_state_name(vm->state));
	if (vm->error[0])
		printf("  error          %s\n", log_escape(vm->error, error, sizeof(error)));
	resync_text(vm, &rr, s->now);
	printf("  tracker        %s\n", tracker);
	if (lp.have) {
		ferry_format_time(lp.last.time_ns, when, sizeof(when));
		format_age(s->now - lp.last.time_ns, age, sizeof(age));
		printf("  last point     %s (%s, %s, %s ago), %u in all\n", lp.last.name,
		       consistency_name(lp.last.consistency), when, age, lp.count);
	} else
		printf("  last point     none yet\n");
	if (rpo >= 0) {
		if (rpo < INT64_C(120) * 1000000000)
			snprintf(age, sizeof(age), "%.1f s", (double)MAX(rpo, INT64_C(0)) / 1e9);
		else
			format_age(rpo, age, sizeof(age));
		printf("  lag (RPO)      %s since the newest applied consistency marker\n", age);
	} else
		printf("  lag (RPO)      n/a (no consistency marker applied yet)\n");
	if (cache_ok) {
		format_bytes(pending, bytes, sizeof(bytes));
		printf("  pending        %zu segment%s, %s in cache %s\n", nseg,
		       nseg == 1 ? "" : "s", bytes, log_escape(vm->cache_url, url, sizeof(url)));
	} else
		printf("  pending        unknown: cache %s unreachable\n",
		       log_escape(vm->cache_url, url, sizeof(url)));
	agent_text(&agent);
	lease_text(&rr, s->now);
	r = ferry_catalog_failover_list(c, vm->id, failover_text, NULL);
	if (r < 0)
		return r;
	printf("  target resources\n");
	return ferry_catalog_resource_list(c, vm->id, res_text, NULL);
}

static int cmd_status(int argc, char **argv)
{
	struct opts o = { 0 };
	if (parse_common(argc, argv, &o,
			 "Usage: ferry status --vault DIR [--json]\n\n"
			 "Per VM: state (initial replication with %, protected, error), tracker,\n"
			 "last recovery point, lag (RPO) now, segments and bytes waiting in the\n"
			 "cache and at the source, the agent's last cycle (duration, size) and\n"
			 "whether the agent has gone silent; target resources.\n") < 0)
		return 2;
	if (o.help)
		return 0;
	if (optind != argc) {
		log_error("usage: ferry status --vault DIR [--json]");
		return 2;
	}
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(o.vault, 1, &v) < 0)
		return 1;
	struct status_ctx s = { v, o.json, json_object_new_array(), ferry_now_ns() };
	int r = ferry_catalog_vm_list(ferry_vault_catalog(v), status_vm, &s);
	if (r >= 0 && o.json) {
		json_object *top = json_object_new_object();
		uint64_t bytes = 0;
		ferry_catalog_store_bytes(ferry_vault_catalog(v), &bytes);
		json_object_object_add(top, "vault", json_object_new_string(o.vault));
		json_object_object_add(top, "store_bytes", json_object_new_int64((int64_t)bytes));
		json_object_object_add(top, "vms", json_object_get(s.arr));
		puts(json_object_to_json_string_ext(top, JSON_C_TO_STRING_PRETTY |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(top);
	}
	json_object_put(s.arr);
	if (r < 0)
		return log_error_errno(r, "cannot read status"), 1;
	return 0;
}

/* ---- recovery-points ---- */

static int print_point(const struct ferry_point *p, void *userdata)
{
	char when[32];
	ferry_format_time(p->time_ns, when, sizeof(when));
	printf("%-22s %-6s %s  seq %llu\n", p->name, consistency_name(p->consistency), when,
	       (unsigned long long)p->seq);
	return 0;
}

static int cmd_points(int argc, char **argv)
{
	struct opts o = { 0 };
	const char *name;
	int r = one_vm_args(argc, argv,
			    "Usage: ferry recovery-points --vault DIR VM\n\n"
			    "One line per point, oldest first: id, consistency, time, sequence.\n",
			    &o, &name);
	if (r >= 0)
		return r;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	if (open_vault(o.vault, 1, &v) < 0 || get_vm(v, name, &vm) < 0)
		return 1;
	r = ferry_catalog_point_list(ferry_vault_catalog(v), vm.id, print_point, NULL);
	if (r < 0)
		return log_error_errno(r, "cannot list points of VM %s", name), 1;
	return 0;
}

/* ---- show ---- */

static int print_disk(const struct ferry_disk *d, void *userdata)
{
	char size[32], path[4 * sizeof(d->source_path)];
	format_bytes(d->size, size, sizeof(size));
	printf("    %-12s %10s  %s\n", d->name, d->size ? size : "unknown",
	       log_escape(d->source_path, path, sizeof(path)));
	return 0;
}

/* The events `ferry show` prints: the newest `want` of them, oldest first.
 * One more is asked for, so that the listing can say whether there are
 * older ones; that one (the first to come) is not printed. */
struct event_page {
	unsigned want, seen;
	int more;
};

static int print_event(int64_t time_ns, const char *level, const char *message, void *userdata)
{
	struct event_page *pg = userdata;
	if (pg->want && pg->seen++ == 0 && pg->more) /* the extra one */
		return 0;
	char when[32], msg[4096], lvl[64];
	ferry_format_time(time_ns, when, sizeof(when));
	printf("    %s %-7s %s\n", when, log_escape(level, lvl, sizeof(lvl)),
	       log_escape(message, msg, sizeof(msg)));
	return 0;
}

static int count_event(int64_t time_ns, const char *level, const char *message, void *userdata)
{
	(*(unsigned *)userdata)++;
	return 0;
}

/* The newest n events of the VM (n = 0: all of them), and a line saying
 * how to see older ones when there are. */
static int show_events(struct ferry_catalog *c, int64_t vm_id, unsigned n)
{
	struct event_page pg = { .want = n };
	unsigned got = 0;
	unsigned ask = n && n < UINT_MAX ? n + 1 : UINT_MAX;
	int r = ferry_catalog_event_list(c, vm_id, ask, count_event, &got);
	if (r < 0)
		return r;
	pg.more = n && got > n;
	printf("  %s\n", n ? "recent events" : "events");
	r = ferry_catalog_event_list(c, vm_id, ask, print_event, &pg);
	if (r >= 0 && pg.more)
		printf("    (older events not shown: --events %u shows more, --events 0 all)\n",
		       n < UINT_MAX / 10 ? n * 10 : UINT_MAX);
	return r;
}

static const char show_help[] =
	"Usage: ferry show --vault DIR [--events N] VM\n\n"
	"A VM's state, policy, disks, target resources and recent events.\n\n"
	"  --events N   the newest N events (default 10; 0: all of them)\n";

/* -1 to go on, or an exit status. */
static int parse_show(int argc, char **argv, struct opts *o, unsigned *events, const char **ret_vm)
{
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, 'V' },
		{ "events", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	optind = 1;
	int c;
	uint64_t n;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
		switch (c) {
		case 'V':
			o->vault = optarg;
			break;
		case 'e':
			if (ferry_parse_u64(optarg, strlen(optarg), UINT_MAX - 1, &n) < 0) {
				log_error("--events wants a number of events (0: all), not '%s'",
					  optarg);
				return 2;
			}
			*events = (unsigned)n;
			break;
		case 'h':
			fputs(show_help, stdout);
			return 0;
		default:
			return 2;
		}
	}
	if (optind + 1 != argc) {
		log_error("expected exactly one VM name (see --help)");
		return 2;
	}
	*ret_vm = argv[optind];
	return -1;
}

static int cmd_show(int argc, char **argv)
{
	struct opts o = { 0 };
	const char *name;
	unsigned events = 10;
	int r = parse_show(argc, argv, &o, &events, &name);
	if (r >= 0)
		return r;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	if (open_vault(o.vault, 1, &v) < 0 || get_vm(v, name, &vm) < 0)
		return 1;
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct last_points lp = { 0 };
	r = ferry_catalog_point_list(c, vm.id, note_last, &lp);

	char created[32], error[4 * sizeof(vm.error)];
	ferry_format_time(vm.created_ns, created, sizeof(created));
	printf("VM %s\n", vm.name);
	printf("  state              %s%s%s\n", ferry_vm_state_name(vm.state),
	       vm.error[0] ? ": " : "", log_escape(vm.error, error, sizeof(error)));
	printf("  enabled            %s\n", created);
	printf("  crash interval     %llds%s\n", (long long)vm.crash_interval_s,
	       vm.crash_interval_s ? "" : " (a point at every consistency marker)");
	if (vm.app_interval_s)
		printf("  app interval       %llds\n", (long long)vm.app_interval_s);
	else
		printf("  app interval       off\n");
	printf("  retention          %llds\n", (long long)vm.retention_s);
	char url[4 * sizeof(vm.cache_url)];
	printf("  cache              %s\n", log_escape(vm.cache_url, url, sizeof(url)));
	printf("  applied segment    %llu\n", (unsigned long long)vm.applied_seq);
	printf("  recovery points    %u%s%s\n", lp.count, lp.have ? ", latest " : "",
	       lp.have ? lp.last.name : "");
	printf("  disks\n");
	if (r >= 0)
		r = ferry_catalog_disk_list(c, vm.id, print_disk, NULL);
	printf("  target resources\n");
	if (r >= 0)
		r = ferry_catalog_resource_list(c, vm.id, res_text, NULL);
	if (r >= 0)
		r = show_events(c, vm.id, events);
	if (r < 0)
		return log_error_errno(r, "cannot read VM %s", name), 1;
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	/* clang-format off */
	{ "init", cmd_init },
	{ "enable-replication", cmd_enable },
	{ "status", cmd_status },
	{ "recovery-points", cmd_points },
	{ "show", cmd_show },
	{ "check", cmd_check },
	{ "gc", cmd_gc },
	{ "test-failover", cmd_test_failover },
	{ "test-failover-cleanup", cmd_test_failover_cleanup },
	{ "failover", cmd_failover },
	{ "change-recovery-point", cmd_change_recovery_point },
	{ "commit", cmd_commit },
	{ "jobs", cmd_jobs },
	{ "attach", cmd_attach },
	{ "reprotect-prepare", cmd_reprotect_prepare },
	{ "reprotect", cmd_reprotect },
	{ "failback", cmd_failback },
	{ "resume-replication", cmd_resume_replication },
	{ "resync", cmd_resync },
	/* clang-format on */
};

/* --insecure-http goes with every command, before it or among its options
 * (up to "--"): taken out here rather than taught to each command. Returns
 * the new argc. */
static int take_insecure_http(int argc, char **argv)
{
	int n = 1, i = 1;
	for (; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--insecure-http") == 0)
			env_blobs_allow_insecure_http();
		else
			argv[n++] = argv[i];
	for (; i < argc; i++)
		argv[n++] = argv[i];
	argv[n] = NULL;
	return n;
}

int main(int argc, char **argv)
{
	log_set_program("ferry");
	env_blobs_setup();
	if (env_faults_setup() < 0)
		return 2;
	argc = take_insecure_http(argc, argv);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("ferry %s\n", FERRY_VERSION);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	log_error("unknown command '%s' (see ferry --help)", argv[1]);
	return 2;
}
