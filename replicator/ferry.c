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
#include "health.h"
#include "virtdom.h"

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
		"  recovery-points --vault DIR --group G     list a consistency group's group points\n"
		"  show --vault DIR VM                       a VM's settings, disks, resources, events\n"
		"  check --vault DIR [--read-data]           verify packs, index and maps\n"
		"  gc --vault DIR                            thin points and collect garbage now\n"
		"  test-failover --vault DIR VM [...]        a writable clone in an isolated network\n"
		"  test-failover-cleanup --vault DIR VM      remove it\n"
		"  failover --vault DIR VM [...]             fail over to the target; stops replication\n"
		"  change-recovery-point --vault DIR VM ...  before commit, pick another point\n"
		"  commit --vault DIR VM                     make the failover final\n"
		"  (these five take --group G instead of VM: every VM of a consistency group)\n"
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
	"         [--libvirt-domain NAME [--connect URI] [--run-dir DIR]]\n"
	"         [--cache URL] [--crash-interval SECONDS] [--app-interval SECONDS]\n"
	"         [--qga SOCKET] [--freeze-timeout SECONDS]\n"
	"         [--group NAME] [--group-interval SECONDS] [--group-pause-limit MS]\n"
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
	"  --libvirt-domain NAME   replicate libvirt domain NAME through libvirt's\n"
	"                          checkpoints and backups (the libvirt tracker): its qcow2\n"
	"                          disks (--disk NAME=TARGET to choose; default every disk,\n"
	"                          named by its target), CPUs, memory and NICs come from it\n"
	"  --connect URI           libvirt's URI (default qemu:///system)\n"
	"  --run-dir DIR           where libvirt's qemu finds the backup's socket and scratch\n"
	"                          files (default /var/lib/ferry/libvirt/VM)\n"
	"  --interval S            seconds between the agent's cycles (default: the crash\n"
	"                          interval, or 60, for scan; 2 for qemu; 5 for libvirt)\n"
	"  --cache URL             where segments travel (default: DIR/cache)\n"
	"  --crash-interval S      crash-consistent point frequency (default 300; 0 = every cycle)\n"
	"  --app-interval S        app-consistent point frequency (default 0 = off); needs\n"
	"                          --tracker qemu and --qga\n"
	"  --qga SOCKET            qemu tracker: the VM's guest agent socket (its\n"
	"                          org.qemu.guest_agent.0 port), to freeze the guest\n"
	"  --freeze-timeout S      the longest a freeze holds the guest (default 10)\n"
	"  --group NAME            qemu tracker (qemu-system): put the VM in consistency group\n"
	"                          NAME, whose VMs are cut together (one cache for all)\n"
	"  --group-interval S      seconds between the group's rounds (default 60)\n"
	"  --group-pause-limit MS  the longest the VM stays paused for a round (default 2000)\n"
	"  --retention S           how long points are kept (default 86400)\n"
	"  --rpo-target S          lag above which ferry status warns, twice it critical\n"
	"                          (default: three agent cycles, at least 60)\n"
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
		O_INTERVAL,
		O_LIBVIRT,
		O_CONNECT,
		O_RUN_DIR,
		O_QGA,
		O_FREEZE_TIMEOUT,
		O_RPO_TARGET,
		O_GROUP,
		O_GROUP_INTERVAL,
		O_GROUP_PAUSE_LIMIT
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
		{ "libvirt-domain", required_argument, NULL, O_LIBVIRT },
		{ "connect", required_argument, NULL, O_CONNECT },
		{ "run-dir", required_argument, NULL, O_RUN_DIR },
		{ "qga", required_argument, NULL, O_QGA },
		{ "freeze-timeout", required_argument, NULL, O_FREEZE_TIMEOUT },
		{ "rpo-target", required_argument, NULL, O_RPO_TARGET },
		{ "group", required_argument, NULL, O_GROUP },
		{ "group-interval", required_argument, NULL, O_GROUP_INTERVAL },
		{ "group-pause-limit", required_argument, NULL, O_GROUP_PAUSE_LIMIT },
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
			{ O_LIBVIRT, &a->libvirt_domain, NULL },
			{ O_CONNECT, &a->connect, NULL },
			{ O_RUN_DIR, &a->run_dir, NULL },
			{ O_QGA, &a->qga, NULL },
			{ O_FREEZE_TIMEOUT, NULL, &a->freeze_timeout },
			{ O_RPO_TARGET, NULL, &a->rpo_target },
			{ O_GROUP, &a->group, NULL },
			{ O_GROUP_INTERVAL, NULL, &a->group_interval },
			{ O_GROUP_PAUSE_LIMIT, NULL, &a->group_pause_limit },
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
	if (optind != argc || !a->vault || !a->vm || (a->ndisks == 0 && !a->libvirt_domain)) {
		log_error("usage: ferry enable-replication --vault DIR --vm NAME --disk NAME=PATH "
			  "... (see --help)");
		return -EINVAL;
	}
	return 0;
}

/* A group's VMs are paused together for its cuts: qemu-system under the
 * qemu tracker (QMP stop), each with a round and pause limit in range. */
static int check_group_args(const struct enable_args *a, int qemu)
{
	if (!a->group) {
		if (a->group_interval || a->group_pause_limit) {
			log_error("--group-interval and --group-pause-limit go with --group");
			return -EINVAL;
		}
		return 0;
	}
	if (!ferry_name_valid(a->group)) {
		log_error("group name '%s' is not valid: use 1-64 of [A-Za-z0-9._-], not starting "
			  "with '.' or '-'",
			  a->group);
		return -EINVAL;
	}
	if (!qemu) {
		log_error("--group needs --tracker qemu: the VMs of a group are paused together "
			  "(QMP stop) for one cut across all of them, which the scan tracker "
			  "cannot do");
		return -EINVAL;
	}
	if (a->group_interval > AGENTCONF_MAX_INTERVAL) {
		log_error("--group-interval wants 1 to %u seconds", AGENTCONF_MAX_INTERVAL);
		return -EINVAL;
	}
	if (a->group_pause_limit > AGENTCONF_MAX_GROUP_PAUSE_LIMIT_MS) {
		log_error("--group-pause-limit wants 1 to %u ms",
			  AGENTCONF_MAX_GROUP_PAUSE_LIMIT_MS);
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
	int libvirt = a->tracker && strcmp(a->tracker, "libvirt") == 0;
	if (a->tracker && !qemu && !libvirt && strcmp(a->tracker, "scan") != 0) {
		log_error("--tracker wants scan, qemu or libvirt, not '%s'", a->tracker);
		return -EINVAL;
	}
	if (libvirt != !!a->libvirt_domain) {
		log_error("the libvirt tracker goes with --libvirt-domain NAME, and only it");
		return -EINVAL;
	}
	if (!libvirt && (a->connect || a->run_dir)) {
		log_error("--connect and --run-dir go with --libvirt-domain");
		return -EINVAL;
	}
	if (a->run_dir && a->run_dir[0] != '/') {
		log_error("--run-dir wants an absolute path (libvirt's qemu opens it)");
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
	/* A freeze holds the guest for the qemu tracker's instant cut; a scan
	 * reads the disks for far longer than a guest may stay frozen. */
	if (!qemu && (a->qga || (a->app && !libvirt))) {
		log_error("--app-interval and --qga go with --tracker qemu: the scan tracker "
			  "cannot freeze the guest, so it makes crash-consistent points only");
		return -EINVAL;
	}
	if (a->app && !libvirt && (!a->qga || !*a->qga)) {
		log_error("--app-interval wants --qga SOCKET: the socket of the VM's guest agent "
			  "(qemu ... -chardev socket,id=qga0,path=SOCKET,server=on,wait=off "
			  "-device virtio-serial -device virtserialport,chardev=qga0,"
			  "name=org.qemu.guest_agent.0), through which the agent freezes the "
			  "guest");
		return -EINVAL;
	}
	if (a->freeze_timeout == 0 || a->freeze_timeout > AGENTCONF_MAX_FREEZE_TIMEOUT) {
		log_error("--freeze-timeout wants 1 to %u seconds", AGENTCONF_MAX_FREEZE_TIMEOUT);
		return -EINVAL;
	}
	if (a->app > AGENTCONF_MAX_INTERVAL) {
		log_error("--app-interval wants 0 to %u seconds", AGENTCONF_MAX_INTERVAL);
		return -EINVAL;
	}
	if (a->interval > AGENTCONF_MAX_INTERVAL) {
		log_error("--interval wants 0 to %u seconds", AGENTCONF_MAX_INTERVAL);
		return -EINVAL;
	}
	if (a->rpo_target > HEALTH_RPO_TARGET_MAX) {
		log_error("--rpo-target wants 1 to %d seconds", HEALTH_RPO_TARGET_MAX);
		return -EINVAL;
	}
	if (check_group_args(a, qemu) < 0)
		return -EINVAL;
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

struct group_check {
	struct ferry_catalog *c;
	const char *group, *vm, *cache, *interval;
	int r;
};

static int check_member(const struct ferry_vm *m, void *userdata)
{
	struct group_check *gc = userdata;
	char interval[32];
	/* Rounds are numbered by wall-clock time over the interval: members
	 * with different intervals would never meet in one. */
	int k = ferry_catalog_resource_get(gc->c, m->id, "group-interval", interval,
					   sizeof(interval));
	if (k < 0 && k != -ENOENT)
		return k;
	if (gc->r >= 0 && k >= 0 && strcmp(interval, gc->interval) != 0) {
		log_error("VM '%s' cannot join group %s with a round every %s s: its member %s "
			  "has one every %s s, and a group's rounds are the same for all (give "
			  "--group-interval %s)",
			  gc->vm, gc->group, gc->interval, m->name, interval, interval);
		gc->r = -EINVAL;
	}
	if (gc->r >= 0 && strcmp(m->cache_url, gc->cache) != 0) {
		char theirs[4 * FERRY_URL_MAX], ours[4 * FERRY_URL_MAX];
		log_error("VM '%s' cannot join group %s: its member %s uses cache %s, not %s; a "
			  "group's agents meet in one cache (give --cache %s)",
			  gc->vm, gc->group, m->name,
			  log_escape(m->cache_url, theirs, sizeof(theirs)),
			  log_escape(gc->cache, ours, sizeof(ours)), theirs);
		gc->r = -EINVAL;
	}
	return 0;
}

/* Puts VM vm_id into a->group, in the caller's transaction: every member
 * must use the same cache, where their agents meet for each round, and the
 * same interval between rounds (resource "group-interval"). */
static int join_group(struct ferry_catalog *c, int64_t vm_id, const struct enable_args *a,
		      const char *cache)
{
	char interval[32];
	snprintf(interval, sizeof(interval), "%llu",
		 (unsigned long long)(a->group_interval ?: AGENTCONF_DEFAULT_GROUP_INTERVAL));
	struct group_check gc = { c, a->group, a->vm, cache, interval, 0 };
	int r = ferry_catalog_vm_list_by_resource(c, "group", a->group, check_member, &gc);
	if (r < 0)
		return r;
	if (gc.r < 0)
		return gc.r;
	r = ferry_catalog_resource_set(c, vm_id, "group", a->group);
	if (r >= 0)
		r = ferry_catalog_resource_set(c, vm_id, "group-interval", interval);
	return r;
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

	/* A qemu disk is a node name and a libvirt one a target, recorded as
	 * they are; a scan disk a path, made absolute. */
	int qemu = a->tracker && strcmp(a->tracker, "qemu") == 0;
	int libvirt = a->tracker && strcmp(a->tracker, "libvirt") == 0;
	_cleanup_(free_paths) char *abs_paths[MAX_CLI_DISKS] = { 0 };
	for (size_t i = 0; i < a->ndisks; i++)
		if (!(abs_paths[i] = qemu || libvirt ? strdup(a->disk_paths[i]) :
						       absolute(a->disk_paths[i])) ||
		    strlen(abs_paths[i]) >= FERRY_PATH_MAX)
			return log_error("disk path of '%s' is unusable", a->disk_names[i]),
			       -EINVAL;

	_cleanup_free_ char *qmp = a->qmp ? absolute(a->qmp) : NULL,
			    *nbd = a->nbd_socket ? absolute(a->nbd_socket) : NULL,
			    *qga = a->qga ? absolute(a->qga) : NULL;
	if ((a->qmp && !qmp) || (a->nbd_socket && !nbd) || (a->qga && !qga))
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
				    libvirt     ? 5 :
				    a->crash    ? a->crash :
						  60,
			.chunk_size = ferry_vault_chunk_size(v),
			.has_chunk_size = 1,
			.tracker = qemu    ? AGENTCONF_TRACKER_QEMU :
				   libvirt ? AGENTCONF_TRACKER_LIBVIRT :
					     AGENTCONF_TRACKER_SCAN,
			.domain = (char *)a->libvirt_domain,
			.connect = (char *)a->connect,
			.run_dir = (char *)a->run_dir,
			.qmp = qmp,
			.nbd_socket = nbd,
			.qga = qga,
			.app_interval = qga || libvirt ? a->app : 0,
			.freeze_timeout = a->freeze_timeout,
			.group = (char *)a->group,
			.group_interval = a->group_interval ?: AGENTCONF_DEFAULT_GROUP_INTERVAL,
			.group_pause_limit_ms = a->group_pause_limit ?:
							AGENTCONF_DEFAULT_GROUP_PAUSE_LIMIT_MS,
			.disks = disks,
			.ndisks = a->ndisks,
		};
		if (r >= 0 && a->group)
			r = join_group(c, vm.id, a, cache);
		if (r >= 0)
			r = ferry_catalog_resource_set(c, vm.id, "tracker",
						       qemu    ? "qemu" :
						       libvirt ? "libvirt" :
								 "scan");
		/* Where the domain is: test-failover-cleanup undefines its
		 * failovers' domains through libvirt. */
		if (r >= 0 && libvirt)
			r = ferry_catalog_resource_set(c, vm.id, "libvirt-domain",
						       a->libvirt_domain);
		if (r >= 0 && libvirt)
			r = ferry_catalog_resource_set(c, vm.id, "libvirt-connect",
						       a->connect ?: VIRTDOM_DEFAULT_URI);
		if (r >= 0 && a->rpo_target) {
			char rpo[24];
			snprintf(rpo, sizeof(rpo), "%llu", (unsigned long long)a->rpo_target);
			r = ferry_catalog_resource_set(c, vm.id, "rpo-target", rpo);
		}
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
	if (a->group)
		printf("  consistency group      %s (a round every %llu s)\n", a->group,
		       (unsigned long long)(a->group_interval ?: AGENTCONF_DEFAULT_GROUP_INTERVAL));
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
	/* The disks, CPUs, memory and NICs of a libvirt domain come from it. */
	struct libvirt_fill fill;
	if (a.libvirt_domain) {
		r = enable_from_libvirt(&a, &fill);
		if (r < 0)
			return r == -EINVAL ? 2 : 1;
	}
	/* Bad arguments are a usage error; enable_replication checks them too. */
	if (check_enable_args(&a) < 0)
		return 2;
	return enable_replication(&a) < 0 ? 1 : 0;
}

/* ---- recovery-points ---- */

static int print_point(const struct ferry_point *p, void *userdata)
{
	char when[32], round[40] = "";
	ferry_format_time(p->time_ns, when, sizeof(when));
	if (p->group_round)
		snprintf(round, sizeof(round), "  group round %llu",
			 (unsigned long long)p->group_round);
	printf("%-22s %-6s %s  seq %llu%s\n", p->name, consistency_name(p->consistency), when,
	       (unsigned long long)p->seq, round);
	return 0;
}

static int cmd_points(int argc, char **argv)
{
	struct opts o = { 0 };
	const char *name;
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--group") == 0 || strncmp(argv[i], "--group=", 8) == 0)
			return cmd_group_points(argc, argv);
	int r = one_vm_args(
		argc, argv,
		"Usage: ferry recovery-points --vault DIR VM\n"
		"       ferry recovery-points --vault DIR --group GROUP [--all] [--json]\n\n"
		"One line per point, oldest first: id, consistency, time, sequence, and\n"
		"the consistency group's round the point was cut at, if any. With\n"
		"--group, the group's group points (see --group G --help).\n",
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
