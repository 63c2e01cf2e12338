/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Re-protect and failback: replicating a failed-over VM back to the source
 * site, sending only what differs, then making the original disks equal to
 * it by writing only the blocks that differ.
 *
 * Source site (vault S, the original disks):
 *   reprotect-prepare  seeds S from the original disks locally (no block
 *                      crosses the network) and publishes the seed (the
 *                      agent's fingerprints and chain head, 0.4 % of the
 *                      disks) in the reverse cache.
 *   failback           applies the final delta, then writes into the
 *                      original disks only the blocks that differ.
 * Target site (vault T, the failed-over clone):
 *   reprotect          configures an agent over the clone's images with the
 *                      seed as its last cycle: its first cycle ships only
 *                      the blocks that differ from the original disks.
 *   resume-replication ends the failover: forward protection resumes,
 *                      and the source's agent ships only what failback
 *                      changed.
 * docs/failover.md gives the whole sequence.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-scan.h"
#include "agentconf.h"
#include "cli.h"
#include "ferry/blobs.h"
#include "ferry/cache.h"
#include "ferry/catalog.h"
#include "ferry/image.h"
#include "ferry/log.h"
#include "ferry/records.h"
#include "fostate.h"
#include "maint.h"
#include "replicate.h"
#include "seed.h"

#define MAX_DISKS 64

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_blobs *, ferry_blobs_free)
struct rp_args {
	const char *vault, *vm, *cache, *mount, *agent_config;
	struct agent_disk disks[MAX_DISKS];
	size_t ndisks;
};

static int parse_rp(int argc, char **argv, const char *help, struct rp_args *a, int want_vm_arg)
{
	enum {
		O_VAULT = 0x100,
		O_VM,
		O_DISK,
		O_CACHE,
		O_MOUNT,
		O_AC
	};
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, O_VAULT },
		{ "vm", required_argument, NULL, O_VM },
		{ "disk", required_argument, NULL, O_DISK },
		{ "cache", required_argument, NULL, O_CACHE },
		{ "mount", required_argument, NULL, O_MOUNT },
		{ "agent-config", required_argument, NULL, O_AC },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
		switch (c) {
		case O_VAULT:
			a->vault = optarg;
			break;
		case O_VM:
			a->vm = optarg;
			break;
		case O_CACHE:
			a->cache = optarg;
			break;
		case O_MOUNT:
			a->mount = optarg;
			break;
		case O_AC:
			a->agent_config = optarg;
			break;
		case O_DISK: {
			char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg || !eq[1] || a->ndisks == MAX_DISKS) {
				log_error("--disk wants NAME=PATH, not '%s'", optarg);
				return 2;
			}
			*eq = 0;
			a->disks[a->ndisks++] = (struct agent_disk){ optarg, eq + 1 };
			break;
		}
		case 'h':
			fputs(help, stdout);
			return 0;
		default:
			return 2;
		}
	}
	if (want_vm_arg) {
		if (optind + 1 != argc) {
			log_error("expected one VM name (see --help)");
			return 2;
		}
		a->vm = argv[optind];
	} else if (optind != argc) {
		log_error("unexpected argument '%s' (see --help)", argv[optind]);
		return 2;
	}
	if (!a->vault || !a->vm) {
		log_error("--vault and a VM are required (see --help)");
		return 2;
	}
	if (!ferry_name_valid(a->vm)) {
		log_error("'%s' is not a valid VM name", a->vm);
		return 2;
	}
	for (size_t i = 0; i < a->ndisks; i++)
		if (!ferry_name_valid(a->disks[i].name)) {
			log_error("disk name '%s' is not valid", a->disks[i].name);
			return 2;
		}
	return -1;
}

/* Names of the seed in the reverse cache, beside segments/ and acks/. */
static void seed_name(char *buf, size_t size, const char *vm, const char *file)
{
	snprintf(buf, size, "seeds/%s/%s", vm, file);
}

/*
 * Beside the seed, failback leaves a note that it brought the original
 * disks to the re-protected state (docs/failover.md): resume-replication
 * at the target site wants it before it takes the failover's clone as the
 * VM's state again. reprotect-prepare and reprotect remove an earlier
 * round's note.
 */
#define FAILBACK_NOTE "failed-back"
#define FAILBACK_MAGIC "FERRY-FAILBACK 1\n"

/* The seed's files travel as seed.h carries them, resync's too. */
static int publish_file(struct ferry_blobs *b, const char *vm, const char *dir, const char *file)
{
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/%s", dir, file) < 0)
		return -ENOMEM;
	char name[256];
	seed_name(name, sizeof(name), vm, file);
	int r = seed_publish(b, name, path);
	if (r < 0)
		return log_error_errno(r, "cannot publish %s as %s in %s", path, name,
				       ferry_blobs_url(b));
	return 0;
}

static int fetch_file(struct ferry_blobs *b, const char *vm, const char *dir, const char *file)
{
	char name[256];
	seed_name(name, sizeof(name), vm, file);
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/%s", dir, file) < 0)
		return -ENOMEM;
	/* A fingerprint file must be whole: the agent's first cycle trusts it. */
	size_t n = strlen(file);
	uint64_t fp_size;
	struct seed_blob sb = { b, name };
	struct seed_source src = seed_blob_source(&sb);
	int r = seed_fetch(&src, path, NULL,
			   n > 3 && strcmp(file + n - 3, ".fp") == 0 ? &fp_size : NULL);
	if (r == -ENOENT)
		return log_error(
			       "no re-protect seed %s in %s: run 'ferry reprotect-prepare' at the "
			       "source site first",
			       name, ferry_blobs_url(b)),
		       r;
	if (r < 0)
		return log_error_errno(r, "cannot fetch %s from %s into %s", name,
				       ferry_blobs_url(b), path);
	return 0;
}

/* Registers the VM in the source vault as enable-replication would, over
 * the original disks and the vault's own cache, a point at every marker. */
static int enable_reverse(const struct rp_args *a, const char *seed_cache)
{
	_Static_assert(MAX_DISKS <= MAX_CLI_DISKS, "every disk fits");
	struct enable_args e = ENABLE_ARGS_INIT;
	e.vault = a->vault;
	e.vm = a->vm;
	e.cache = seed_cache;
	e.crash = 0;
	for (size_t i = 0; i < a->ndisks; i++) {
		e.disk_names[i] = a->disks[i].name;
		e.disk_paths[i] = a->disks[i].path;
	}
	e.ndisks = a->ndisks;
	return enable_replication(&e);
}

/* A local cache made absolute, so that the catalog, the agent's
 * configuration and the commands printed work from any directory; a URL
 * as it is (the rule enable-replication follows). */
static char *cache_location(const char *cache)
{
	return strchr(cache, ':') ? strdup(cache) : absolute(cache);
}

/* What the other site needs to reach the reverse cache, for the commands
 * printed. */
static const char *cache_hint(const char *cache)
{
	if (strncmp(cache, "azblob://", 9) == 0)
		return "with the container's credentials in the environment "
		       "(AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN)";
	if (strncmp(cache, "s3://", 5) == 0)
		return "with the bucket's credentials in the environment (AWS_ACCESS_KEY_ID, "
		       "AWS_SECRET_ACCESS_KEY, AWS_REGION or AWS_ENDPOINT_URL)";
	return "where this directory is reachable at the same path (a shared file system)";
}

/* Whether the VM may be seeded into the vault at dir: not there yet. */
static int prepare_allowed(const char *dir, const char *vm_name)
{
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(dir, 1, &v) < 0)
		return -EINVAL;
	struct ferry_vm vm;
	int r = ferry_catalog_vm_get(ferry_vault_catalog(v), vm_name, &vm);
	if (r < 0 && r != -ENOENT)
		return log_error_errno(r, "cannot read VM '%s'", vm_name);
	return fostate_require(v, r >= 0 ? &vm : NULL, FOSTATE_REPROTECT_PREPARE, NULL);
}

/* Runs one scan cycle over the original disks into the vault's own cache,
 * then applies it, under the writer lock (a replicator may run beside). */
static int seed(const struct rp_args *a, const char *vault_abs, const char *seed_cache,
		const char *state, struct ferry_vault **ret_v, struct ferry_vm *vm)
{
	int r = ferry_mkdir_p(state, 0700);
	if (r < 0)
		return log_error_errno(r, "cannot create %s", state);
	_cleanup_(ferry_cache_freep) struct ferry_cache *local = NULL;
	r = ferry_cache_open(seed_cache, 1, &local);
	if (r < 0)
		return log_error_errno(r, "cannot open %s", seed_cache);
	struct agent_scan_params p = { .vm = a->vm,
				       .state_dir = state,
				       .disks = a->disks,
				       .ndisks = a->ndisks,
				       .cache = local };
	struct agent_scan_stats st;
	r = agent_scan_cycle(&p, &st);
	if (r <= 0)
		return log_error("VM %s: seeding from the original disks failed", a->vm), -EIO;
	fprintf(stderr, "Seeded %llu bytes of original disks locally.\n",
		(unsigned long long)st.scanned_bytes);

	_cleanup_close_ int lock = -1;
	r = maint_writer_lock_wait(vault_abs, 60, &lock);
	if (r < 0)
		return log_error_errno(r, "cannot lock vault %s", vault_abs);
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(vault_abs, 0, &v) < 0 || get_vm(v, a->vm, vm) < 0)
		return -EINVAL;
	r = replicate_vm(v, vm, NULL);
	if (r < 0 || get_vm(v, a->vm, vm) < 0 || vm->marker_seq == 0)
		return log_error("VM %s: applying the seed failed", a->vm), -EIO;
	*ret_v = TAKE_PTR(v);
	return 0;
}

/* The seed's fingerprints, progress and chain head into the reverse cache;
 * a failback note of an earlier round goes. */
static int publish_seed(const struct rp_args *a, const char *cache, const char *state,
			const struct ferry_vm *vm)
{
	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b = NULL;
	int r = ferry_blobs_open(cache, 1, &b);
	if (r < 0)
		return log_error_errno(r, "cannot open cache %s", cache);
	for (size_t i = 0; r >= 0 && i < a->ndisks; i++) {
		char file[FERRY_NAME_MAX + 8];
		snprintf(file, sizeof(file), "%s.fp", a->disks[i].name);
		r = publish_file(b, a->vm, state, file);
	}
	if (r >= 0)
		r = publish_file(b, a->vm, state, "progress");
	if (r < 0)
		return r;
	char name[256];
	seed_name(name, sizeof(name), a->vm, FAILBACK_NOTE);
	r = ferry_blobs_delete(b, name);
	if (r < 0)
		return log_error_errno(r, "cannot remove %s from %s", name, cache);
	_cleanup_(ferry_cache_freep) struct ferry_cache *reverse = NULL;
	struct ferry_ack ack = { vm->applied_seq, vm->applied_digest };
	r = ferry_cache_open(cache, 1, &reverse);
	if (r >= 0)
		r = ferry_cache_put_ack(reverse, a->vm, &ack);
	if (r < 0)
		return log_error_errno(r, "cannot acknowledge the seed in %s", cache);
	return 0;
}

/* From now on the VM replicates from the reverse cache, in role back. */
static int switch_to_reverse(struct ferry_vault *v, struct ferry_vm *vm, const char *cache)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	snprintf(vm->cache_url, sizeof(vm->cache_url), "%s", cache);
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = ferry_catalog_vm_update(c, vm);
	if (r >= 0)
		r = ferry_catalog_resource_set(c, vm->id, "cache", cache);
	if (r >= 0)
		r = fostate_role_set(c, vm->id, FOSTATE_BACK);
	if (r >= 0)
		r = ferry_catalog_job_add(c, vm->id, "reprotect-prepare", "succeeded",
					  "seeded from the original disks", NULL);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	r = ferry_catalog_commit(c);
	/* The store's copy of the VM follows, so attach restores it. */
	return r < 0 ? r : record_vm_write(v, vm->id);
}

static const char prepare_help[] =
	"Usage: ferry reprotect-prepare --vault DIR --vm NAME --disk NAME=PATH [--disk ...]\n"
	"         --cache URL\n"
	"\n"
	"At the source site, after a failover: seeds vault DIR with the VM's original\n"
	"disks, locally, and publishes the seed (block fingerprints and chain head) in\n"
	"the reverse cache URL, which the target site's agent will write to. Then\n"
	"run 'ferry reprotect' at the target site. DIR must not hold the VM yet: it\n"
	"becomes the VM's vault in role back, which only 'ferry failback' ends.\n";

int cmd_reprotect_prepare(int argc, char **argv)
{
	struct rp_args a = { 0 };
	int r = parse_rp(argc, argv, prepare_help, &a, 0);
	if (r >= 0)
		return r;
	if (!a.cache || a.ndisks == 0) {
		log_error("--cache URL and the original disks (--disk NAME=PATH) are required");
		return 2;
	}
	_cleanup_free_ char *vault_abs = realpath(a.vault, NULL), *seed_cache = NULL,
			    *cache = cache_location(a.cache), *state = NULL;
	if (!vault_abs)
		return log_error_errno(-errno, "cannot resolve %s", a.vault), 1;
	if (!cache || asprintf(&seed_cache, "%s/cache", vault_abs) < 0 ||
	    asprintf(&state, "%s/agents/%s.state", vault_abs, a.vm) < 0)
		return log_error("out of memory"), 1;
	if (prepare_allowed(vault_abs, a.vm) < 0)
		return 1;

	/* Register the VM with the vault's own cache, seed it, publish the
	 * seed, then switch the VM to the reverse cache. */
	if (enable_reverse(&a, seed_cache) < 0)
		return 1;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	if (seed(&a, vault_abs, seed_cache, state, &v, &vm) < 0 ||
	    publish_seed(&a, cache, state, &vm) < 0)
		return 1;
	r = switch_to_reverse(v, &vm, cache);
	if (r < 0)
		return log_error_errno(r, "cannot switch VM %s to cache %s", a.vm, cache), 1;
	fprintf(stderr,
		"Seed published in %s. At the target site, %s, run:\n"
		"  ferry reprotect --vault TARGET-VAULT %s --mount MOUNT --cache %s\n"
		"and here: ferry-replicator --vault %s\n",
		cache, cache_hint(cache), a.vm, cache, vault_abs);
	return 0;
}

struct failover_find {
	struct ferry_failover f;
	int have;
};

static int find_real(const struct ferry_failover *f, void *userdata)
{
	struct failover_find *ff = userdata;
	if (f->kind == FERRY_FAILOVER_REAL) {
		ff->f = *f;
		ff->have = 1;
	}
	return 0;
}

struct clone_paths {
	const char *mount, *vm, *failover;
	struct agent_disk disks[MAX_DISKS];
	size_t n;
};

static int add_clone_path(const struct ferry_clone_disk *d, void *userdata)
{
	struct clone_paths *cp = userdata;
	if (cp->n == MAX_DISKS)
		return -E2BIG;
	char *path = NULL, *name = strdup(d->name);
	if (!name || asprintf(&path, "%s/%s/failovers/%s/%s.img", cp->mount, cp->vm, cp->failover,
			      d->name) < 0) {
		free(name);
		return -ENOMEM;
	}
	cp->disks[cp->n++] = (struct agent_disk){ name, path };
	return 0;
}

/*
 * Moves the VM from state expected (it is checked again in the
 * transaction) to next, with its job and event, and optionally a resource
 * of the VM set and a failover dropped. -ESTALE (logged) if another
 * command moved the VM since it was checked.
 */
struct transition {
	enum ferry_vm_state expected, next;
	const char *job, *detail;
	const char *res_kind, *res_value;
	int64_t drop_failover;
};

static int transition(struct ferry_vault *v, struct ferry_vm *vm, const struct transition *t)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = fostate_recheck(c, vm, t->expected);
	if (r >= 0) {
		vm->state = t->next;
		r = ferry_catalog_vm_update(c, vm);
	}
	if (r >= 0 && t->res_kind)
		r = ferry_catalog_resource_set(c, vm->id, t->res_kind, t->res_value);
	if (r >= 0 && t->drop_failover > 0)
		r = ferry_catalog_failover_delete(c, t->drop_failover);
	if (r >= 0)
		r = ferry_catalog_job_add(c, vm->id, t->job, "succeeded", t->detail, NULL);
	if (r >= 0) {
		char ev[400];
		snprintf(ev, sizeof(ev), "%s: %s", t->job, t->detail);
		r = ferry_catalog_event_add(c, vm->id, "info", ev);
	}
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	return ferry_catalog_commit(c);
}

/* The failed-over VM's clone images in the mount, and the agent's state
 * directory and configuration file. */
struct reprotect_files {
	struct clone_paths cp;
	char *state, *conf;
};

static void reprotect_files_done(struct reprotect_files *rf)
{
	for (size_t i = 0; i < rf->cp.n; i++) {
		free(rf->cp.disks[i].name);
		free(rf->cp.disks[i].path);
	}
	free(rf->state);
	free(rf->conf);
}

static int find_reprotect_files(struct ferry_vault *v, const struct ferry_vm *vm,
				const struct ferry_failover *f, const char *vault_abs,
				const char *agent_config, struct reprotect_files *rf)
{
	int r = ferry_catalog_clone_disks(ferry_vault_catalog(v), f->id, add_clone_path, &rf->cp);
	if (r < 0)
		return log_error_errno(r, "cannot read the clone of VM %s", vm->name);
	if (asprintf(&rf->state, "%s/agents/%s.reprotect.state", vault_abs, vm->name) < 0)
		rf->state = NULL;
	if (agent_config)
		rf->conf = absolute(agent_config);
	else if (asprintf(&rf->conf, "%s/agents/%s.reprotect.conf", vault_abs, vm->name) < 0)
		rf->conf = NULL;
	if (!rf->state || !rf->conf)
		return log_error("out of memory"), -ENOMEM;
	for (size_t i = 0; i < rf->cp.n; i++)
		if (access(rf->cp.disks[i].path, R_OK) < 0)
			return log_error(
				       "clone image %s is not readable: is the vault mounted at %s?",
				       rf->cp.disks[i].path, rf->cp.mount),
			       -ENOENT;
	return 0;
}

/* The seed becomes the agent's last cycle; a failback note of an earlier
 * round goes, so that only this round's failback counts. */
static int fetch_seed(const char *cache, const char *vm, const struct reprotect_files *rf)
{
	int r = ferry_mkdir_p(rf->state, 0700);
	if (r < 0)
		return log_error_errno(r, "cannot create %s", rf->state);
	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b = NULL;
	r = ferry_blobs_open(cache, 0, &b);
	if (r < 0)
		return log_error_errno(r, "cannot open cache %s", cache);
	for (size_t i = 0; r >= 0 && i < rf->cp.n; i++) {
		char file[FERRY_NAME_MAX + 8];
		snprintf(file, sizeof(file), "%s.fp", rf->cp.disks[i].name);
		r = fetch_file(b, vm, rf->state, file);
	}
	if (r >= 0)
		r = fetch_file(b, vm, rf->state, "progress");
	if (r < 0)
		return r;
	char name[256];
	seed_name(name, sizeof(name), vm, FAILBACK_NOTE);
	r = ferry_blobs_delete(b, name);
	if (r < 0)
		return log_error_errno(r, "cannot remove %s from %s", name, cache);
	return 0;
}

static const char reprotect_help[] =
	"Usage: ferry reprotect --vault DIR VM --mount MOUNT --cache URL [--agent-config FILE]\n"
	"\n"
	"At the target site, after 'ferry reprotect-prepare' at the source: writes an\n"
	"agent configuration that replicates the failed-over VM (its clone, as seen\n"
	"in the ferryfs mount MOUNT) into the reverse cache URL, starting from the\n"
	"source's seed, so only blocks that differ from the original disks travel.\n"
	"The failover must be committed. Default configuration file:\n"
	"DIR/agents/VM.reprotect.conf.\n";

int cmd_reprotect(int argc, char **argv)
{
	struct rp_args a = { 0 };
	int r = parse_rp(argc, argv, reprotect_help, &a, 1);
	if (r >= 0)
		return r;
	if (!a.cache || !a.mount) {
		log_error("--cache URL and --mount MOUNT are required");
		return 2;
	}
	_cleanup_free_ char *vault_abs = realpath(a.vault, NULL), *mount = realpath(a.mount, NULL),
			    *cache = cache_location(a.cache);
	if (!vault_abs || !mount)
		return log_error_errno(-errno, "cannot resolve %s or %s", a.vault, a.mount), 1;
	if (!cache)
		return log_error("out of memory"), 1;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	enum ferry_vm_state next;
	if (open_vault(vault_abs, 0, &v) < 0 || get_vm(v, a.vm, &vm) < 0 ||
	    fostate_require(v, &vm, FOSTATE_REPROTECT, &next) < 0)
		return 1;
	struct failover_find ff = { 0 };
	r = ferry_catalog_failover_list(ferry_vault_catalog(v), vm.id, find_real, &ff);
	if (r < 0 || !ff.have)
		return log_error("VM %s has no failover to re-protect", vm.name), 1;

	struct reprotect_files rf = {
		.cp = { .mount = mount, .vm = vm.name, .failover = ff.f.name }
	};
	r = find_reprotect_files(v, &vm, &ff.f, vault_abs, a.agent_config, &rf);
	if (r >= 0)
		r = fetch_seed(cache, vm.name, &rf);
	/* No chunk-size: the source vault's is not known here; the agent
	 * takes the default. */
	const struct agentconf ac = {
		.vm = vm.name,
		.cache = cache,
		.state = rf.state,
		.interval = 60,
		.disks = rf.cp.disks,
		.ndisks = rf.cp.n,
	};
	if (r >= 0) {
		r = agentconf_write(
			&ac, rf.conf,
			"re-protecting it to the source site, written by ferry reprotect");
		if (r < 0)
			log_error_errno(r, "cannot write %s", rf.conf);
	}
	if (r >= 0) {
		const struct transition t = { .expected = FERRY_VM_COMMITTED,
					      .next = next,
					      .job = "reprotect",
					      .detail = cache,
					      .res_kind = "reverse-cache",
					      .res_value = cache };
		r = transition(v, &vm, &t);
		if (r < 0 && r != -ESTALE)
			log_error_errno(r, "cannot record re-protection of VM %s", vm.name);
	}
	if (r < 0) {
		reprotect_files_done(&rf);
		return 1;
	}
	printf("%s\n", rf.conf);
	fprintf(stderr,
		"VM %s re-protects to %s. Run here: ferry-agent --config %s\n"
		"When ready to fail back: stop the VM, run one last 'ferry-agent --config %s "
		"--once',\nthen 'ferry failback' at the source site.\n",
		vm.name, cache, rf.conf, rf.conf);
	reprotect_files_done(&rf);
	return 0;
}

/* Writes into fd only the 4 KiB blocks where it differs from img. */
static int sync_disk(struct ferry_image *img, int fd, uint64_t size, uint64_t *written)
{
	const size_t step = 1 << 20;
	_cleanup_free_ uint8_t *want = malloc(step), *have = malloc(step);
	if (!want || !have)
		return -ENOMEM;
	for (uint64_t off = 0; off < size; off += step) {
		size_t n = (size_t)MIN((uint64_t)step, size - off);
		ssize_t got = ferry_image_read(img, want, n, off);
		if (got < 0)
			return (int)got;
		if ((size_t)got != n)
			return -EIO;
		int r = ferry_pread_all(fd, have, n, (off_t)off);
		if (r < 0)
			return r;
		for (size_t b = 0; b < n; b += FERRY_BLOCK_SIZE) {
			size_t len = MIN((size_t)FERRY_BLOCK_SIZE, n - b);
			if (memcmp(want + b, have + b, len) == 0)
				continue;
			r = ferry_pwrite_all(fd, want + b, len, (off_t)(off + b));
			if (r < 0)
				return r;
			*written += len;
		}
	}
	return fsync(fd) < 0 ? -errno : 0;
}

struct failback_ctx {
	struct ferry_vault *v;
	struct ferry_chunk_cache *cc;
	uint64_t written;
	int failed;
};

static int failback_disk(const struct ferry_disk *d, void *userdata)
{
	struct failback_ctx *fc = userdata;
	_cleanup_close_ int fd = open(d->source_path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fc->failed = 1;
		return log_error_errno(-errno, "cannot open original disk %s (%s)", d->name,
				       d->source_path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || (S_ISREG(st.st_mode) && (uint64_t)st.st_size != d->size)) {
		fc->failed = 1;
		return log_error("original disk %s (%s) is not %llu bytes", d->name, d->source_path,
				 (unsigned long long)d->size),
		       -EINVAL;
	}
	struct ferry_image *img;
	int r = ferry_image_open(fc->cc, &d->live_root, d->size, &img);
	if (r < 0)
		return log_error_errno(r, "cannot open the re-protected image of disk %s", d->name);
	uint64_t before = fc->written;
	r = sync_disk(img, fd, d->size, &fc->written);
	ferry_image_free(img);
	if (r < 0) {
		fc->failed = 1;
		return log_error_errno(r, "failback of disk %s (%s) failed", d->name,
				       d->source_path);
	}
	fprintf(stderr, "disk %s: %llu bytes rewritten in %s\n", d->name,
		(unsigned long long)(fc->written - before), d->source_path);
	return 0;
}

/* Refuses while a replicator runs on the vault: it would apply segments
 * while failback writes the original disks. Its lock, held here until
 * failback is done, keeps one from starting meanwhile. */
static int exclude_replicator(const char *vault, const char *vm, int *ret_fd)
{
	pid_t pid = 0;
	int r = fostate_replicator_exclude(vault, ret_fd, &pid);
	if (r == -EBUSY && pid > 0)
		return log_error("a ferry-replicator (pid %ld) runs on vault %s: it would apply "
				 "segments of VM %s while failback writes the original disks; "
				 "stop it (kill %ld), then run failback again; nothing was written",
				 (long)pid, vault, vm, (long)pid),
		       r;
	if (r == -EBUSY)
		return log_error(
			       "a ferry-replicator runs on vault %s (it holds %s/replicator.lock): "
			       "stop it, then run failback again; nothing was written",
			       vault, vault),
		       r;
	if (r < 0)
		return log_error_errno(r, "cannot lock vault %s", vault);
	return 0;
}

/* The note resume-replication looks for, in the reverse cache. */
static int put_failback_note(const struct ferry_vm *vm, uint64_t written)
{
	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b = NULL;
	int r = ferry_blobs_open(vm->cache_url, 0, &b);
	if (r < 0)
		return log_error_errno(r, "cannot open cache %s", vm->cache_url);
	char name[256], text[256];
	seed_name(name, sizeof(name), vm->name, FAILBACK_NOTE);
	int n = snprintf(text, sizeof(text),
			 FAILBACK_MAGIC "vm=%s\nseq=%llu\ntime_ns=%lld\nbytes=%llu\n", vm->name,
			 (unsigned long long)vm->applied_seq, (long long)ferry_now_ns(),
			 (unsigned long long)written);
	r = ferry_blobs_put(b, name, text, (size_t)n, 0);
	if (r < 0)
		return log_error_errno(r, "cannot leave the failback note %s in %s", name,
				       vm->cache_url);
	return 0;
}

/* The VM as it is now, if failback may (still) run on it. */
static int failback_allowed(struct ferry_vault *v, const char *name, struct ferry_vm *vm,
			    enum ferry_vm_state *ret_next)
{
	if (get_vm(v, name, vm) < 0)
		return -EINVAL;
	return fostate_require(v, vm, FOSTATE_FAILBACK, ret_next);
}

static const char failback_help[] =
	"Usage: ferry failback --vault DIR VM\n"
	"\n"
	"At the source site, after the VM was stopped at the target and its agent\n"
	"ran one last cycle: applies what is left in the reverse cache, then brings\n"
	"the original disk files to the failed-over VM's state by writing only the\n"
	"blocks that differ. Then run 'ferry resume-replication' at the target site.\n"
	"DIR is the vault 'ferry reprotect-prepare' seeded; no ferry-replicator may\n"
	"run on it. Failback runs once: the original disks are the VM's again.\n";

int cmd_failback(int argc, char **argv)
{
	struct rp_args a = { 0 };
	int r = parse_rp(argc, argv, failback_help, &a, 1);
	if (r >= 0)
		return r;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	enum ferry_vm_state next;
	if (open_vault(a.vault, 0, &v) < 0 || failback_allowed(v, a.vm, &vm, &next) < 0)
		return 1;
	_cleanup_close_ int rlock = -1, wlock = -1;
	if (exclude_replicator(a.vault, vm.name, &rlock) < 0)
		return 1;
	r = maint_writer_lock_wait(a.vault, 60, &wlock);
	if (r < 0)
		return log_error_errno(r, "cannot lock vault %s", a.vault), 1;
	if (failback_allowed(v, a.vm, &vm, &next) < 0)
		return 1;
	r = replicate_vm(v, &vm, NULL);
	if (r < 0)
		return log_error("VM %s: the final delta could not be applied (see 'ferry status "
				 "--vault %s'); nothing was written",
				 vm.name, a.vault),
		       1;
	if (failback_allowed(v, a.vm, &vm, &next) < 0)
		return 1;

	struct failback_ctx fc = { .v = v };
	r = ferry_chunk_cache_new(v, 64u << 20, &fc.cc);
	if (r >= 0)
		r = ferry_catalog_disk_list(ferry_vault_catalog(v), vm.id, failback_disk, &fc);
	ferry_chunk_cache_free(fc.cc);
	if (r < 0 || fc.failed)
		return 1;
	if (put_failback_note(&vm, fc.written) < 0)
		return 1;
	char detail[64];
	snprintf(detail, sizeof(detail), "%llu bytes rewritten", (unsigned long long)fc.written);
	const struct transition t = {
		.expected = vm.state, .next = next, .job = "failback", .detail = detail
	};
	r = transition(v, &vm, &t);
	if (r < 0 && r != -ESTALE)
		log_error_errno(r, "cannot record the failback of VM %s", vm.name);
	if (r < 0)
		return 1;
	printf("%llu\n", (unsigned long long)fc.written);
	fprintf(stderr,
		"VM %s failed back: %s. At the target site run\n"
		"  ferry resume-replication --vault TARGET-VAULT %s\n"
		"and restart the VM and its agent here.\n",
		vm.name, detail, vm.name);
	return 0;
}

/* ---- resume-replication ---- */

/* Whether the source site failed the VM back since it was re-protected:
 * its note in the reverse cache (reprotect removed any older one). */
static int failed_back_at_source(struct ferry_vault *v, const struct ferry_vm *vm)
{
	char cache[FERRY_URL_MAX];
	int r = ferry_catalog_resource_get(ferry_vault_catalog(v), vm->id, "reverse-cache", cache,
					   sizeof(cache));
	if (r == -ENOENT) {
		log_warning("VM %s was re-protected by an older ferry, which left no way to see "
			    "that the source site failed back: go on only once 'ferry failback' "
			    "ran there",
			    vm->name);
		return 0;
	}
	if (r < 0)
		return log_error_errno(r, "cannot read VM %s", vm->name);
	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b = NULL;
	r = ferry_blobs_open(cache, 0, &b);
	if (r < 0)
		return log_error_errno(r, "cannot open the reverse cache %s", cache);
	char name[256];
	seed_name(name, sizeof(name), vm->name, FAILBACK_NOTE);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	r = ferry_blobs_get_max(b, name, 4096, (void **)&buf, &len);
	if (r == -ENOENT)
		return log_error(
			       "VM %s has not failed back at the source site yet (no %s in %s): "
			       "stop the VM here, run its re-protect agent once more with --once, "
			       "run 'ferry failback' at the source site, then resume-replication; "
			       "nothing was changed",
			       vm->name, name, cache),
		       -EPERM;
	if (r < 0)
		return log_error_errno(r, "cannot read %s in %s", name, cache);
	char want[FERRY_NAME_MAX + 8];
	snprintf(want, sizeof(want), "\nvm=%s\n", vm->name);
	if (len < strlen(FAILBACK_MAGIC) ||
	    memcmp(buf, FAILBACK_MAGIC, strlen(FAILBACK_MAGIC)) != 0 ||
	    !memmem(buf, len, want, strlen(want)))
		return log_error("%s in %s is not a failback note of VM %s", name, cache, vm->name),
		       -EBADMSG;
	return 0;
}

/* What resume-replication commits, in the transaction of the VM's new
 * STATE record. */
struct resume {
	struct ferry_vm vm;
	struct ferry_failover f;
	struct ferry_disk disks[MAX_DISKS];
	size_t ndisks, nclone;
	struct fostate_abandoned ab;
	struct ferry_id state_record;
	char detail[200];
};

static int resume_disk(const struct ferry_disk *d, void *userdata)
{
	struct resume *rs = userdata;
	if (rs->ndisks == MAX_DISKS)
		return -E2BIG;
	rs->disks[rs->ndisks++] = *d;
	return 0;
}

/* After failback the original disks hold what the clone holds: its roots
 * become the VM's, the base the source's next cycle applies onto. */
static int resume_clone_disk(const struct ferry_clone_disk *cd, void *userdata)
{
	struct resume *rs = userdata;
	for (size_t i = 0; i < rs->ndisks; i++) {
		struct ferry_disk *d = &rs->disks[i];
		if (d->idx != cd->idx)
			continue;
		if (d->size != cd->size)
			return -EINVAL;
		d->live_root = d->work_root = cd->root;
		rs->nclone++;
		return 0;
	}
	return -EINVAL;
}

static int resume_rows(struct ferry_catalog *c, void *userdata)
{
	struct resume *rs = userdata;
	struct ferry_vm now = rs->vm;
	int r = fostate_recheck(c, &now, FERRY_VM_REPROTECTING);
	for (size_t i = 0; r >= 0 && i < rs->ndisks; i++)
		r = ferry_catalog_disk_update(c, &rs->disks[i]);
	if (r >= 0) {
		now.state = FERRY_VM_PROTECTED;
		now.error[0] = 0;
		now.applied_seq = rs->ab.last_seq;
		now.applied_digest = rs->ab.last_digest;
		now.state_record = rs->state_record;
		r = ferry_catalog_vm_update(c, &now);
	}
	if (r >= 0)
		r = ferry_catalog_failover_delete(c, rs->f.id);
	if (r >= 0)
		r = ferry_catalog_job_add(c, now.id, "resume-replication", "succeeded", rs->detail,
					  NULL);
	if (r >= 0) {
		char ev[300];
		snprintf(ev, sizeof(ev), "resume-replication: %s", rs->detail);
		r = ferry_catalog_event_add(c, now.id, "info", ev);
	}
	return r;
}

/* Stores the VM's state after resume as a STATE record (what ferry attach
 * restores) and, in the same transaction, moves the catalog to it. */
static int resume_commit(struct ferry_vault *v, struct resume *rs)
{
	struct ferry_record_state sr = {
		.vm_created_ns = rs->vm.created_ns,
		.state = FERRY_VM_PROTECTED,
		.applied_seq = rs->ab.last_seq,
		.applied_digest = rs->ab.last_digest,
		.marker_seq = rs->vm.marker_seq,
		.marker_ns = rs->vm.marker_ns,
		.initial_done = rs->vm.initial_done_bytes,
		.initial_total = rs->vm.initial_total_bytes,
		.disks = rs->disks,
		.ndisks = rs->ndisks,
	};
	memcpy(sr.vm, rs->vm.name, sizeof(sr.vm));
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r = ferry_record_state_encode(&sr, &buf, &len);
	if (r < 0)
		return r;
	return ferry_record_store(v, FERRY_OBJ_STATE, buf, len, &rs->state_record, resume_rows, rs);
}

/* What the resume will do: the failover's clone as the disks, and the
 * segments the old source shipped meanwhile out of the way. */
static int resume_plan(struct ferry_vault *v, struct resume *rs)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct failover_find ff = { 0 };
	int r = ferry_catalog_failover_list(c, rs->vm.id, find_real, &ff);
	if (r < 0)
		return log_error_errno(r, "cannot read VM %s", rs->vm.name);
	if (!ff.have)
		return log_error("VM %s is re-protecting but its failover is missing: run 'ferry "
				 "status' and 'ferry jobs' to see what happened",
				 rs->vm.name),
		       -ENOENT;
	rs->f = ff.f;
	r = ferry_catalog_disk_list(c, rs->vm.id, resume_disk, rs);
	if (r >= 0)
		r = ferry_catalog_clone_disks(c, rs->f.id, resume_clone_disk, rs);
	if (r >= 0 && rs->nclone != rs->ndisks)
		r = -EINVAL;
	if (r < 0)
		return log_error_errno(r,
				       "the clone of failover '%s' does not match the disks of "
				       "VM %s",
				       rs->f.name, rs->vm.name);
	char msg[512];
	r = fostate_abandoned_find(&rs->vm, &rs->ab, msg, sizeof(msg));
	if (r < 0)
		return log_error("VM %s: %s; nothing was changed", rs->vm.name, msg), r;
	if (rs->ab.count)
		snprintf(rs->detail, sizeof(rs->detail),
			 "from failover '%s'; discarded %zu segment(s) %llu-%llu that the old "
			 "source shipped after failover",
			 rs->f.name, rs->ab.count, (unsigned long long)rs->ab.first_seq,
			 (unsigned long long)rs->ab.last_seq);
	else
		snprintf(rs->detail, sizeof(rs->detail), "from failover '%s'", rs->f.name);
	return 0;
}

static int resume(struct ferry_vault *v, const struct ferry_vm *vm)
{
	_cleanup_free_ struct resume *rs = calloc(1, sizeof(*rs));
	if (!rs)
		return log_error("out of memory"), -ENOMEM;
	rs->vm = *vm;
	int r = failed_back_at_source(v, vm);
	if (r >= 0)
		r = resume_plan(v, rs);
	if (r < 0)
		return r;
	r = resume_commit(v, rs);
	if (r < 0)
		return r == -ESTALE ?
			       r :
			       log_error_errno(r, "cannot resume replication of VM %s", vm->name);
	if (rs->ab.count) {
		fprintf(stderr,
			"Discarded %zu segment(s) (seq %llu to %llu, %llu bytes) that the old source "
			"shipped after the failover: the state they held was abandoned.\n",
			rs->ab.count, (unsigned long long)rs->ab.first_seq,
			(unsigned long long)rs->ab.last_seq, (unsigned long long)rs->ab.bytes);
		r = fostate_abandoned_drop(vm, &rs->ab);
		if (r < 0)
			log_warning_errno(r,
					  "VM %s: cannot remove the discarded segments from %s; "
					  "the replicator removes them at its next pass",
					  vm->name, vm->cache_url);
	}
	fprintf(stderr,
		"Forward protection of VM %s resumed from failover '%s': its clone is the VM's "
		"state; restart the VM and its agent at the source site.\n",
		vm->name, rs->f.name);
	return 0;
}

/* A failed-back state that an older ferry's failback left on the forward
 * vault: back to the failover it stranded, or to protection. */
static int resume_repair(struct ferry_vault *v, struct ferry_vm *vm)
{
	struct failover_find ff = { 0 };
	int r = ferry_catalog_failover_list(ferry_vault_catalog(v), vm->id, find_real, &ff);
	if (r < 0)
		return log_error_errno(r, "cannot read VM %s", vm->name);
	enum ferry_vm_state next = !ff.have                               ? FERRY_VM_PROTECTED :
				   ff.f.state == FERRY_FAILOVER_COMMITTED ? FERRY_VM_COMMITTED :
									    FERRY_VM_FAILED_OVER;
	char detail[128];
	snprintf(detail, sizeof(detail), "repaired a failed-back state on the forward vault: %s",
		 ferry_vm_state_name(next));
	const struct transition t = { .expected = FERRY_VM_FAILED_BACK,
				      .next = next,
				      .job = "resume-replication",
				      .detail = detail };
	r = transition(v, vm, &t);
	if (r < 0)
		return r == -ESTALE ?
			       r :
			       log_error_errno(r, "cannot resume replication of VM %s", vm->name);
	if (ff.have)
		fprintf(stderr, "VM %s is %s again, with its failover '%s'.\n", vm->name,
			ferry_vm_state_name(next), ff.f.name);
	else
		fprintf(stderr, "Forward protection of VM %s resumed.\n", vm->name);
	return 0;
}

int cmd_resume_replication(int argc, char **argv)
{
	struct rp_args a = { 0 };
	int r = parse_rp(
		argc, argv,
		"Usage: ferry resume-replication --vault DIR VM\n\n"
		"At the target site, after failback: ends the failover and resumes forward\n"
		"protection of the VM from the failover's clone, which the original disks\n"
		"now equal; its agent at the source ships only what changed. Segments the\n"
		"old source shipped after the failover are discarded, never applied.\n",
		&a, 1);
	if (r >= 0)
		return r;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	if (open_vault(a.vault, 0, &v) < 0 || get_vm(v, a.vm, &vm) < 0 ||
	    fostate_require(v, &vm, FOSTATE_RESUME_REPLICATION, NULL) < 0)
		return 1;
	r = vm.state == FERRY_VM_FAILED_BACK ? resume_repair(v, &vm) : resume(v, &vm);
	return r < 0 ? 1 : 0;
}
