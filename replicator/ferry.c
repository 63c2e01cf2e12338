/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry: the control CLI. Creates vaults, enables replication of a VM
 * (registering it with its target resources and writing the agent's
 * configuration), shows status, recovery points and VM details, verifies a
 * vault and collects its garbage. Each verb is one function below.
 */
#include <errno.h>
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

#include "ferry/cache.h"
#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/log.h"
#include "ferry/map.h"
#include "ferry/store.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "maint.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_vault *, ferry_vault_free)

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ferry COMMAND [OPTIONS]\n"
		"\n"
		"Commands:\n"
		"  init --vault DIR [--chunk-size BYTES]     create a vault\n"
		"  enable-replication --vault DIR --vm NAME --disk NAME=PATH...\n"
		"                                            protect a VM (see 'ferry enable-replication --help')\n"
		"  status --vault DIR [--json]               state, last point, RPO, pending bytes per VM\n"
		"  recovery-points --vault DIR VM            list a VM's recovery points, oldest first\n"
		"  show --vault DIR VM                       a VM's settings, disks, resources, events\n"
		"  check --vault DIR [--read-data]           verify packs, index and maps\n"
		"  gc --vault DIR                            thin points and collect garbage now\n"
		"\n"
		"  ferry --help | --version\n"
		"\n"
		"See ferry(1).\n");
}

/* ---- small helpers ---- */

static int parse_u64(const char *s, uint64_t max, uint64_t *ret)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

static void format_time(int64_t ns, char *buf, size_t size)
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void format_bytes(uint64_t b, char *buf, size_t size)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)b;
	unsigned u = 0;
	while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
		v /= 1024;
		u++;
	}
	snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static void format_age(int64_t ns, char *buf, size_t size)
{
	int64_t s = ns / 1000000000;
	if (s < 0)
		s = 0;
	if (s < 120)
		snprintf(buf, size, "%llds", (long long)s);
	else if (s < 7200)
		snprintf(buf, size, "%lldm%02llds", (long long)s / 60, (long long)s % 60);
	else
		snprintf(buf, size, "%lldh%02lldm", (long long)s / 3600, (long long)(s / 60) % 60);
}

static const char *state_name(enum ferry_vm_state s)
{
	switch (s) {
	case FERRY_VM_INITIAL:
		return "initial-replication";
	case FERRY_VM_PROTECTED:
		return "protected";
	case FERRY_VM_ERROR:
		return "error";
	}
	return "unknown";
}

static const char *consistency_name(int c)
{
	return c == FERRY_CONSISTENCY_APP ? "app" : "crash";
}

static int open_vault(const char *dir, int readonly, struct ferry_vault **ret)
{
	if (!dir) {
		log_error("--vault DIR is required");
		return -EINVAL;
	}
	int r = ferry_vault_open(dir, readonly, ret);
	if (r == -ENOENT)
		log_error("%s is not a vault (no catalog.db; create one with 'ferry init')", dir);
	else if (r == -EPROTONOSUPPORT)
		log_error("vault %s was made by a newer ferry", dir);
	else if (r < 0)
		log_error_errno(r, "cannot open vault %s", dir);
	return r;
}

static int get_vm(struct ferry_vault *v, const char *name, struct ferry_vm *ret)
{
	int r = ferry_catalog_vm_get(ferry_vault_catalog(v), name, ret);
	if (r == -ENOENT)
		log_error("no VM '%s' in vault %s", name, ferry_vault_dir(v));
	else if (r < 0)
		log_error_errno(r, "cannot read VM '%s'", name);
	return r;
}

/* Common option parsing: --vault and --help for every verb, plus extras. */
struct opts {
	const char *vault;
	int json, read_data, help;
};

static int parse_common(int argc, char **argv, struct opts *o, const char *help_text)
{
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, 'V' },
		{ "json", no_argument, NULL, 'j' },
		{ "read-data", no_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
		switch (c) {
		case 'V':
			o->vault = optarg;
			break;
		case 'j':
			o->json = 1;
			break;
		case 'r':
			o->read_data = 1;
			break;
		case 'h':
			fputs(help_text, stdout);
			o->help = 1;
			return 0;
		default:
			return -EINVAL;
		}
	}
	return 0;
}

/* ---- init ---- */

static int cmd_init(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, 'V' },
		{ "chunk-size", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const char *dir = NULL;
	uint64_t chunk = FERRY_CHUNK_SIZE_DEFAULT;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
		switch (c) {
		case 'V':
			dir = optarg;
			break;
		case 'c':
			if (parse_u64(optarg, FERRY_CHUNK_SIZE_MAX, &chunk) < 0 ||
			    chunk < FERRY_CHUNK_SIZE_MIN || (chunk & (chunk - 1))) {
				log_error("--chunk-size must be a power of two between %u and %u",
					  FERRY_CHUNK_SIZE_MIN, FERRY_CHUNK_SIZE_MAX);
				return 2;
			}
			break;
		case 'h':
			printf("Usage: ferry init --vault DIR [--chunk-size BYTES]\n\n"
			       "Creates a vault in DIR (absent or empty): catalog.db, the store\n"
			       "(store/), the embedded cache (cache/) and agents/.\n"
			       "Chunk size: a power of two, default %u.\n",
			       FERRY_CHUNK_SIZE_DEFAULT);
			return 0;
		default:
			return 2;
		}
	}
	if (!dir || optind != argc) {
		log_error("usage: ferry init --vault DIR [--chunk-size BYTES]");
		return 2;
	}
	int r = ferry_vault_create(dir, (uint32_t)chunk, NULL);
	if (r == -ENOTEMPTY) {
		log_error("%s exists and is not empty; a vault needs a new directory", dir);
		return 1;
	}
	if (r < 0) {
		log_error_errno(r, "cannot create vault %s", dir);
		return 1;
	}
	printf("Created vault %s (chunk size %llu)\n", dir, (unsigned long long)chunk);
	return 0;
}

/* ---- enable-replication ---- */

#define MAX_CLI_DISKS 64

struct enable_args {
	const char *vault, *vm, *cache, *agent_config;
	const char *source_group, *source_network, *source_subnet;
	const char *target_group, *target_network, *target_subnet, *avset;
	uint64_t crash, app, retention;
	const char *disk_names[MAX_CLI_DISKS];
	char *disk_paths[MAX_CLI_DISKS];
	size_t ndisks;
};

static const char enable_help[] =
	"Usage: ferry enable-replication --vault DIR --vm NAME --disk NAME=PATH [--disk ...]\n"
	"         [--cache URL] [--crash-interval SECONDS] [--app-interval SECONDS]\n"
	"         [--retention SECONDS] [--source-group G] [--source-network N]\n"
	"         [--source-subnet S] [--target-group G] [--target-network N]\n"
	"         [--target-subnet S] [--availability-set A] [--agent-config FILE]\n"
	"\n"
	"Registers a VM for replication, creates its target resources in the catalog\n"
	"and writes the agent's configuration file (default DIR/agents/NAME.conf).\n"
	"\n"
	"  --disk NAME=PATH        a disk, in source order; PATH is where the agent reads it\n"
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
	"  --agent-config FILE     where to write the agent configuration\n";

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
		O_AC
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
			{ O_VAULT, &a->vault, NULL },       { O_VM, &a->vm, NULL },
			{ O_CACHE, &a->cache, NULL },       { O_SG, &a->source_group, NULL },
			{ O_SN, &a->source_network, NULL }, { O_SS, &a->source_subnet, NULL },
			{ O_TG, &a->target_group, NULL },   { O_TN, &a->target_network, NULL },
			{ O_TS, &a->target_subnet, NULL },  { O_AS, &a->avset, NULL },
			{ O_AC, &a->agent_config, NULL },   { O_CRASH, NULL, &a->crash },
			{ O_APP, NULL, &a->app },           { O_RET, NULL, &a->retention },
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
			if (parse_u64(optarg, 100 * year, num) < 0) {
				log_error("%s wants a number of seconds, not '%s'",
					  argv[optind - 1], optarg);
				return -EINVAL;
			}
			continue;
		}
		switch (c) {
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
	if (a->retention == 0) {
		log_error("--retention must be at least one second");
		return -EINVAL;
	}
	return 0;
}

static int check_names(const struct enable_args *a)
{
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

/* An absolute form of path that need not exist yet. */
static char *absolute(const char *path)
{
	if (path[0] == '/')
		return strdup(path);
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	char *r;
	return asprintf(&r, "%s/%s", cwd, path) < 0 ? NULL : r;
}

static int write_agent_config(const char *path, const struct enable_args *a, const char *cache,
			      const char *state_dir, const char *const *abs_paths)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f,
		"# ferry agent configuration for VM %s, written by ferry enable-replication.\n"
		"# Run: ferry-agent --config %s\n"
		"[agent]\n"
		"version = 1\n"
		"vm = %s\n"
		"cache = %s\n"
		"state = %s\n"
		"interval = %llu\n",
		a->vm, path, a->vm, cache, state_dir,
		(unsigned long long)(a->crash ? a->crash : 60));
	for (size_t i = 0; i < a->ndisks; i++)
		fprintf(f, "\n[disk]\nname = %s\npath = %s\n", a->disk_names[i], abs_paths[i]);
	if (fclose(f) != 0) {
		free(text);
		return -ENOMEM;
	}
	int r = ferry_write_file_atomic(path, text, len);
	free(text);
	return r;
}

static int cmd_enable(int argc, char **argv)
{
	struct enable_args a = { .crash = 300, .app = 0, .retention = 86400 };
	int r = parse_enable(argc, argv, &a);
	if (r != 0)
		return r > 0 ? 0 : 2;
	if (check_names(&a) < 0)
		return 2;

	/* Opened by its absolute path, so every path recorded is absolute. */
	_cleanup_free_ char *vault_abs = realpath(a.vault, NULL);
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(vault_abs ?: a.vault, 0, &v) < 0)
		return 1;

	/* Defaults follow the source settings, as the reference service does. */
	char tg[80], tn[80], ts[80], as[80];
	const char *sg = a.source_group ?: "default", *sn = a.source_network ?: "default",
		   *ss = a.source_subnet ?: "default";
	snprintf(tg, sizeof(tg), "%.64s", a.target_group ?: "");
	snprintf(tn, sizeof(tn), "%.64s", a.target_network ?: "");
	snprintf(ts, sizeof(ts), "%.64s", a.target_subnet ?: "");
	snprintf(as, sizeof(as), "%.64s", a.avset ?: "");
	if (!a.target_group)
		snprintf(tg, sizeof(tg), "%s-ferry", sg);
	if (!a.target_network)
		snprintf(tn, sizeof(tn), "%s-ferry", sn);
	if (!a.target_subnet)
		snprintf(ts, sizeof(ts), "%s-ferry", ss);
	if (!a.avset)
		snprintf(as, sizeof(as), "%s-avset-ferry", a.vm);

	_cleanup_free_ char *cache = NULL, *conf = NULL, *state = NULL;
	/* The embedded default: the vault's own cache directory. */
	if (a.cache)
		cache = strchr(a.cache, ':') ? strdup(a.cache) : absolute(a.cache);
	else if (asprintf(&cache, "%s/cache", vault_abs) < 0)
		cache = NULL;
	if (!cache)
		return log_error("out of memory"), 1;
	if (strlen(cache) >= FERRY_URL_MAX)
		return log_error("cache URL is too long"), 1;

	struct ferry_cache *fc;
	r = ferry_cache_open(cache, 1, &fc);
	if (r < 0)
		return log_error_errno(r, "cannot open cache %s", cache), 1;
	ferry_cache_free(fc);

	if (a.agent_config)
		conf = absolute(a.agent_config);
	else if (asprintf(&conf, "%s/agents/%s.conf", vault_abs, a.vm) < 0)
		conf = NULL;
	if (asprintf(&state, "%s/agents/%s.state", vault_abs, a.vm) < 0)
		state = NULL;
	if (!conf || !state)
		return log_error("out of memory"), 1;

	char *abs_paths[MAX_CLI_DISKS] = { 0 };
	for (size_t i = 0; i < a.ndisks; i++)
		if (!(abs_paths[i] = absolute(a.disk_paths[i])) ||
		    strlen(abs_paths[i]) >= FERRY_PATH_MAX)
			return log_error("disk path of '%s' is unusable", a.disk_names[i]), 1;

	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm vm = {
		.state = FERRY_VM_INITIAL,
		.crash_interval_s = (int64_t)a.crash,
		.app_interval_s = (int64_t)a.app,
		.retention_s = (int64_t)a.retention,
		.created_ns = ferry_now_ns(),
	};
	snprintf(vm.name, sizeof(vm.name), "%s", a.vm);
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
			log_error("VM '%s' is already protected in this vault", a.vm);
		for (size_t i = 0; r >= 0 && i < a.ndisks; i++) {
			struct ferry_disk d = { .vm_id = vm.id, .idx = (uint16_t)i };
			snprintf(d.name, sizeof(d.name), "%s", a.disk_names[i]);
			snprintf(d.source_path, sizeof(d.source_path), "%s", abs_paths[i]);
			r = ferry_catalog_disk_add(c, &d);
		}
		for (size_t i = 0; r >= 0 && i < ARRAY_SIZE(res); i++)
			r = ferry_catalog_resource_set(c, vm.id, res[i][0], res[i][1]);
		if (r >= 0)
			r = ferry_catalog_event_add(c, vm.id, "info", "replication enabled");
		/* The agent's file comes before the commit: a VM in the catalog
		 * always has its configuration. */
		if (r >= 0)
			r = write_agent_config(conf, &a, cache, state,
					       (const char *const *)abs_paths);
		if (r >= 0)
			r = ferry_catalog_commit(c);
		else
			ferry_catalog_rollback(c);
	}
	for (size_t i = 0; i < a.ndisks; i++)
		free(abs_paths[i]);
	if (r < 0) {
		if (r != -EEXIST)
			log_error_errno(r, "cannot enable replication of VM '%s'", a.vm);
		return 1;
	}

	printf("Replication enabled for VM %s (%zu disk%s)\n", a.vm, a.ndisks,
	       a.ndisks == 1 ? "" : "s");
	printf("  target resource group  %s\n", tg);
	printf("  target network         %s (mapping %s, reverse %s)\n", tn, map, rmap);
	printf("  target subnet          %s\n", ts);
	printf("  availability set       %s\n", as);
	printf("  cache                  %s\n", cache);
	printf("  target storage         %s\n", store_url);
	printf("  agent configuration    %s\n", conf);
	printf("Start the agent at the source: ferry-agent --config %s\n", conf);
	return 0;
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
	if (strcmp(kind, "agent-config") != 0)
		printf("    %-24s %s\n", kind, value);
	return 0;
}

static int status_vm(const struct ferry_vm *vm, void *userdata)
{
	struct status_ctx *s = userdata;
	struct ferry_catalog *c = ferry_vault_catalog(s->v);
	struct last_points lp = { 0 };
	int r = ferry_catalog_point_list(c, vm->id, note_last, &lp);
	if (r < 0)
		return r;

	uint64_t pending = 0;
	size_t nseg = 0;
	int cache_ok = 0;
	struct ferry_cache *cache;
	if (ferry_cache_open(vm->cache_url, 0, &cache) >= 0) {
		uint64_t *seqs = NULL;
		cache_ok = ferry_cache_list_segments(cache, vm->name, &seqs, &nseg, &pending) >= 0;
		free(seqs);
		ferry_cache_free(cache);
	}
	double pct = vm->initial_total_bytes ? 100.0 * (double)vm->initial_done_bytes /
						       (double)vm->initial_total_bytes :
					       0.0;
	int64_t rpo = vm->marker_ns ? s->now - vm->marker_ns : -1;

	if (s->json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "vm", json_object_new_string(vm->name));
		json_object_object_add(o, "state", json_object_new_string(state_name(vm->state)));
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
		json_object *res = json_object_new_object();
		r = ferry_catalog_resource_list(c, vm->id, res_json, res);
		json_object_object_add(o, "resources", res);
		json_object_array_add(s->arr, o);
		return r;
	}

	char when[32], age[32], bytes[32];
	printf("%s\n", vm->name);
	if (vm->state == FERRY_VM_INITIAL)
		printf("  state          initial replication, %.1f%%\n", pct);
	else
		printf("  state          %s\n", state_name(vm->state));
	if (vm->error[0])
		printf("  error          %s\n", vm->error);
	if (lp.have) {
		format_time(lp.last.time_ns, when, sizeof(when));
		format_age(s->now - lp.last.time_ns, age, sizeof(age));
		printf("  last point     %s (%s, %s, %s ago), %u in all\n", lp.last.name,
		       consistency_name(lp.last.consistency), when, age, lp.count);
	} else
		printf("  last point     none yet\n");
	if (rpo >= 0) {
		format_age(rpo, age, sizeof(age));
		printf("  RPO            %s (latest applied consistency marker)\n", age);
	} else
		printf("  RPO            n/a (no consistency marker applied yet)\n");
	if (cache_ok) {
		format_bytes(pending, bytes, sizeof(bytes));
		printf("  pending        %zu segment%s, %s in cache %s\n", nseg,
		       nseg == 1 ? "" : "s", bytes, vm->cache_url);
	} else
		printf("  pending        unknown: cache %s unreachable\n", vm->cache_url);
	printf("  target resources\n");
	return ferry_catalog_resource_list(c, vm->id, res_text, NULL);
}

static int cmd_status(int argc, char **argv)
{
	struct opts o = { 0 };
	if (parse_common(
		    argc, argv, &o,
		    "Usage: ferry status --vault DIR [--json]\n\n"
		    "Per VM: state (initial replication with %, protected, error), last\n"
		    "recovery point, RPO now, bytes pending in the cache, target resources.\n") < 0)
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
	format_time(p->time_ns, when, sizeof(when));
	printf("%-22s %-6s %s  seq %llu\n", p->name, consistency_name(p->consistency), when,
	       (unsigned long long)p->seq);
	return 0;
}

static int one_vm_args(int argc, char **argv, const char *help, struct opts *o, const char **ret_vm)
{
	if (parse_common(argc, argv, o, help) < 0)
		return 2;
	if (o->help)
		return 0;
	if (optind + 1 != argc) {
		log_error("expected exactly one VM name (see --help)");
		return 2;
	}
	*ret_vm = argv[optind];
	return -1;
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
	char size[32];
	format_bytes(d->size, size, sizeof(size));
	printf("    %-12s %10s  %s\n", d->name, d->size ? size : "unknown", d->source_path);
	return 0;
}

static int print_event(int64_t time_ns, const char *level, const char *message, void *userdata)
{
	char when[32];
	format_time(time_ns, when, sizeof(when));
	printf("    %s %-7s %s\n", when, level, message);
	return 0;
}

static int cmd_show(int argc, char **argv)
{
	struct opts o = { 0 };
	const char *name;
	int r = one_vm_args(argc, argv,
			    "Usage: ferry show --vault DIR VM\n\n"
			    "A VM's state, policy, disks, target resources and recent events.\n",
			    &o, &name);
	if (r >= 0)
		return r;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	if (open_vault(o.vault, 1, &v) < 0 || get_vm(v, name, &vm) < 0)
		return 1;
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct last_points lp = { 0 };
	r = ferry_catalog_point_list(c, vm.id, note_last, &lp);

	char created[32];
	format_time(vm.created_ns, created, sizeof(created));
	printf("VM %s\n", vm.name);
	printf("  state              %s%s%s\n", state_name(vm.state), vm.error[0] ? ": " : "",
	       vm.error);
	printf("  enabled            %s\n", created);
	printf("  crash interval     %llds%s\n", (long long)vm.crash_interval_s,
	       vm.crash_interval_s ? "" : " (a point at every consistency marker)");
	if (vm.app_interval_s)
		printf("  app interval       %llds\n", (long long)vm.app_interval_s);
	else
		printf("  app interval       off\n");
	printf("  retention          %llds\n", (long long)vm.retention_s);
	printf("  cache              %s\n", vm.cache_url);
	printf("  applied segment    %llu\n", (unsigned long long)vm.applied_seq);
	printf("  recovery points    %u%s%s\n", lp.count, lp.have ? ", latest " : "",
	       lp.have ? lp.last.name : "");
	printf("  disks\n");
	if (r >= 0)
		r = ferry_catalog_disk_list(c, vm.id, print_disk, NULL);
	printf("  target resources\n");
	if (r >= 0)
		r = ferry_catalog_resource_list(c, vm.id, res_text, NULL);
	printf("  recent events\n");
	if (r >= 0)
		r = ferry_catalog_event_list(c, vm.id, 10, print_event, NULL);
	if (r < 0)
		return log_error_errno(r, "cannot read VM %s", name), 1;
	return 0;
}

/* ---- check ---- */

struct check_ctx {
	struct ferry_vault *v;
	int read_data;
	unsigned problems;
	uint64_t packs, objects, nodes, extents, roots;
	const char *what; /* the map being walked, for messages */
	uint64_t *known_packs;
	size_t nknown;
};

static int problem(struct check_ctx *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int problem(struct check_ctx *k, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("DAMAGE: %s\n", msg);
	k->problems++;
	return 0;
}

static int count_index_entry(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata)
{
	struct check_ctx *k = userdata;
	k->objects++;
	return 0;
}

static int check_pack(uint64_t pack, uint64_t size, uint32_t count, void *userdata)
{
	struct check_ctx *k = userdata;
	uint64_t before = k->objects;
	k->packs++;
	uint64_t *n = realloc(k->known_packs, (k->nknown + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	k->known_packs = n;
	k->known_packs[k->nknown++] = pack;
	int r = ferry_store_pack_index(ferry_vault_store(k->v), pack, k->read_data,
				       count_index_entry, k);
	if (r < 0)
		return problem(k, "pack %016llx: %s", (unsigned long long)pack,
			       r == -EBADMSG ? "damaged (checksum, truncation or bad object)" :
					       strerror(-r));
	if (k->objects - before != count)
		return problem(k, "pack %016llx holds %llu objects, the catalog expects %u",
			       (unsigned long long)pack, (unsigned long long)(k->objects - before),
			       count);
	return 0;
}

static int check_node(const struct ferry_id *id, void *userdata)
{
	struct check_ctx *k = userdata;
	k->nodes++;
	return 0;
}

static int check_extent(const struct ferry_extent *e, void *userdata)
{
	struct check_ctx *k = userdata;
	struct ferry_loc loc;
	k->extents++;
	int r = ferry_catalog_object_get(ferry_vault_catalog(k->v), &e->chunk, &loc);
	char hex[FERRY_ID_HEX_SIZE];
	if (r == -ENOENT)
		return problem(k, "%s: chunk %s at block %llu is missing from the store", k->what,
			       ferry_id_to_hex(&e->chunk, hex), (unsigned long long)e->block);
	if (r < 0)
		return r;
	if (loc.type != FERRY_OBJ_CHUNK ||
	    ((uint64_t)e->chunk_block + e->count) * FERRY_BLOCK_SIZE > loc.plen)
		return problem(k, "%s: blocks %llu+%llu point outside chunk %s", k->what,
			       (unsigned long long)e->block, (unsigned long long)e->count,
			       ferry_id_to_hex(&e->chunk, hex));
	return 0;
}

static int check_root(struct check_ctx *k, const char *what, const struct ferry_id *root,
		      uint64_t size)
{
	if (ferry_id_is_null(root) || size == 0)
		return 0;
	k->roots++;
	k->what = what;
	int r = ferry_map_walk(ferry_vault_objsrc(k->v), root, DIV_ROUND_UP(size, FERRY_BLOCK_SIZE),
			       check_node, check_extent, k);
	if (r < 0 && r != -ENOMEM)
		return problem(k, "%s: map unreadable (%s)", what, strerror(-r));
	return r;
}

struct check_vm_ctx {
	struct check_ctx *k;
	const struct ferry_vm *vm;
	const char *point;
};

static int check_disk(const struct ferry_disk *d, void *userdata)
{
	struct check_vm_ctx *cv = userdata;
	char what[256];
	snprintf(what, sizeof(what), "VM %s disk %s (live)", cv->vm->name, d->name);
	int r = check_root(cv->k, what, &d->live_root, d->size);
	if (r < 0 || ferry_id_equal(&d->live_root, &d->work_root))
		return r;
	snprintf(what, sizeof(what), "VM %s disk %s (applied, before marker)", cv->vm->name,
		 d->name);
	return check_root(cv->k, what, &d->work_root, d->size);
}

static int check_point_disk(const struct ferry_point_disk *d, void *userdata)
{
	struct check_vm_ctx *cv = userdata;
	char what[256];
	snprintf(what, sizeof(what), "VM %s point %s disk %s", cv->vm->name, cv->point, d->name);
	return check_root(cv->k, what, &d->root, d->size);
}

static int check_point(const struct ferry_point *p, void *userdata)
{
	struct check_vm_ctx *cv = userdata;
	cv->point = p->name;
	return ferry_catalog_point_disks(ferry_vault_catalog(cv->k->v), p->id, check_point_disk,
					 cv);
}

static int check_vm(const struct ferry_vm *vm, void *userdata)
{
	struct check_vm_ctx cv = { userdata, vm, NULL };
	struct ferry_catalog *c = ferry_vault_catalog(cv.k->v);
	int r = ferry_catalog_disk_list(c, vm->id, check_disk, &cv);
	return r < 0 ? r : ferry_catalog_point_list(c, vm->id, check_point, &cv);
}

static int check_object_pack(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata)
{
	struct check_ctx *k = userdata;
	for (size_t i = 0; i < k->nknown; i++)
		if (k->known_packs[i] == loc->pack)
			return 0;
	char hex[FERRY_ID_HEX_SIZE];
	return problem(k, "object %s is indexed in pack %016llx, which the catalog does not have",
		       ferry_id_to_hex(id, hex), (unsigned long long)loc->pack);
}

static int cmd_check(int argc, char **argv)
{
	struct opts o = { 0 };
	if (parse_common(argc, argv, &o,
			 "Usage: ferry check --vault DIR [--read-data]\n\n"
			 "Verifies every pack (footer, index checksum), that every indexed object\n"
			 "lives in a known pack, and every map of every disk and recovery point.\n"
			 "--read-data also reads, decompresses and hashes every object.\n"
			 "Exits 1 if anything is damaged.\n") < 0)
		return 2;
	if (o.help)
		return 0;
	if (optind != argc) {
		log_error("usage: ferry check --vault DIR [--read-data]");
		return 2;
	}
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(o.vault, 1, &v) < 0)
		return 1;
	struct check_ctx k = { .v = v, .read_data = o.read_data };
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int r = ferry_catalog_pack_list(c, check_pack, &k);
	if (r >= 0 && k.nknown < 100000)
		r = ferry_catalog_object_list(c, check_object_pack, &k);
	if (r >= 0)
		r = ferry_catalog_vm_list(c, check_vm, &k);
	free(k.known_packs);
	if (r < 0)
		return log_error_errno(r, "check of %s could not finish", o.vault), 1;
	printf("%s: %llu packs, %llu objects%s, %llu maps, %llu map nodes, %llu extents: %s\n",
	       o.vault, (unsigned long long)k.packs, (unsigned long long)k.objects,
	       o.read_data ? " (data read and verified)" : "", (unsigned long long)k.roots,
	       (unsigned long long)k.nodes, (unsigned long long)k.extents,
	       k.problems ? "DAMAGED" : "ok");
	if (k.problems)
		printf("%u problem%s found\n", k.problems, k.problems == 1 ? "" : "s");
	return k.problems ? 1 : 0;
}

/* ---- gc ---- */

static int cmd_gc(int argc, char **argv)
{
	struct opts o = { 0 };
	if (parse_common(argc, argv, &o,
			 "Usage: ferry gc --vault DIR\n\n"
			 "Applies the retention policy and removes data that no recovery point\n"
			 "or live image references. Needs the vault's writer lock: stop the\n"
			 "replicator first (it collects garbage itself as it runs).\n") < 0)
		return 2;
	if (o.help)
		return 0;
	if (!o.vault || optind != argc) {
		log_error("usage: ferry gc --vault DIR");
		return 2;
	}
	_cleanup_close_ int lock = -1;
	int r = maint_lock(o.vault, &lock);
	if (r == -EBUSY)
		return log_error("vault %s is in use by a replicator", o.vault), 1;
	if (r < 0)
		return log_error_errno(r, "cannot lock vault %s", o.vault), 1;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(o.vault, 0, &v) < 0)
		return 1;
	unsigned thinned = 0;
	struct gc_result g;
	r = maint_thin(v, ferry_now_ns(), &thinned);
	if (r >= 0)
		r = maint_gc(v, &g);
	if (r < 0)
		return log_error_errno(r, "garbage collection of %s failed", o.vault), 1;
	char freed[32];
	format_bytes(g.bytes_freed, freed, sizeof(freed));
	printf("%u point(s) thinned; %llu live objects; %llu pack(s) deleted, %llu rewritten, "
	       "%llu orphan(s) removed; %s freed\n",
	       thinned, (unsigned long long)g.live_objects, (unsigned long long)g.packs_deleted,
	       (unsigned long long)g.packs_rewritten, (unsigned long long)g.orphan_packs, freed);
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "init", cmd_init },     { "enable-replication", cmd_enable },
	{ "status", cmd_status }, { "recovery-points", cmd_points },
	{ "show", cmd_show },     { "check", cmd_check },
	{ "gc", cmd_gc },
};

int main(int argc, char **argv)
{
	log_set_program("ferry");
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
