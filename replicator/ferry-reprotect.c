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
#include "maint.h"
#include "replicate.h"

#define MAX_DISKS 64

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_blobs *, ferry_blobs_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_cache *, ferry_cache_free)

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

static int publish_file(struct ferry_blobs *b, const char *vm, const char *dir, const char *file)
{
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/%s", dir, file) < 0)
		return -ENOMEM;
	_cleanup_free_ void *buf = NULL;
	size_t len;
	int r = ferry_read_file(path, &buf, &len);
	if (r < 0)
		return log_error_errno(r, "cannot read %s", path);
	char name[256];
	seed_name(name, sizeof(name), vm, file);
	r = ferry_blobs_put(b, name, buf, len, 0);
	if (r < 0)
		return log_error_errno(r, "cannot publish %s in %s", name, ferry_blobs_url(b));
	return 0;
}

static int fetch_file(struct ferry_blobs *b, const char *vm, const char *dir, const char *file)
{
	char name[256];
	seed_name(name, sizeof(name), vm, file);
	_cleanup_free_ void *buf = NULL;
	size_t len;
	int r = ferry_blobs_get(b, name, &buf, &len);
	if (r == -ENOENT)
		return log_error(
			       "no re-protect seed %s in %s: run 'ferry reprotect-prepare' at the "
			       "source site first",
			       name, ferry_blobs_url(b)),
		       r;
	if (r < 0)
		return log_error_errno(r, "cannot fetch %s from %s", name, ferry_blobs_url(b));
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/%s", dir, file) < 0)
		return -ENOMEM;
	r = ferry_write_file_atomic(path, buf, len);
	if (r < 0)
		return log_error_errno(r, "cannot write %s", path);
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

static const char prepare_help[] =
	"Usage: ferry reprotect-prepare --vault DIR --vm NAME --disk NAME=PATH [--disk ...]\n"
	"         --cache URL\n"
	"\n"
	"At the source site, after a failover: seeds vault DIR with the VM's original\n"
	"disks, locally, and publishes the seed (block fingerprints and chain head) in\n"
	"the reverse cache URL, which the target site's agent will write to. Then\n"
	"run 'ferry reprotect' at the target site.\n";

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

	/* 1. Register the VM with the vault's own cache and seed it. */
	_cleanup_free_ char *vault_abs = realpath(a.vault, NULL), *seed_cache = NULL;
	if (!vault_abs)
		return log_error_errno(-errno, "cannot resolve %s", a.vault), 1;
	if (asprintf(&seed_cache, "%s/cache", vault_abs) < 0)
		return 1;
	if (enable_reverse(&a, seed_cache) < 0)
		return 1;

	_cleanup_free_ char *state = NULL;
	if (asprintf(&state, "%s/agents/%s.state", vault_abs, a.vm) < 0)
		return 1;
	r = ferry_mkdir_p(state, 0700);
	if (r < 0)
		return log_error_errno(r, "cannot create %s", state), 1;
	_cleanup_(ferry_cache_freep) struct ferry_cache *local = NULL;
	r = ferry_cache_open(seed_cache, 1, &local);
	if (r < 0)
		return log_error_errno(r, "cannot open %s", seed_cache), 1;
	struct agent_scan_params p = {
		.vm = a.vm, .state_dir = state, .disks = a.disks, .ndisks = a.ndisks, .cache = local
	};
	struct agent_scan_stats st;
	r = agent_scan_cycle(&p, &st);
	if (r <= 0)
		return log_error("VM %s: seeding from the original disks failed", a.vm), 1;
	fprintf(stderr, "Seeded %llu bytes of original disks locally.\n",
		(unsigned long long)st.scanned_bytes);

	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	if (open_vault(vault_abs, 0, &v) < 0 || get_vm(v, a.vm, &vm) < 0)
		return 1;
	r = replicate_vm(v, &vm, NULL);
	if (r < 0 || get_vm(v, a.vm, &vm) < 0)
		return log_error("VM %s: applying the seed failed", a.vm), 1;

	/* 2. Publish the seed and the chain head in the reverse cache. */
	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b = NULL;
	r = ferry_blobs_open(a.cache, 1, &b);
	if (r < 0)
		return log_error_errno(r, "cannot open cache %s", a.cache), 1;
	for (size_t i = 0; r >= 0 && i < a.ndisks; i++) {
		char file[FERRY_NAME_MAX + 8];
		snprintf(file, sizeof(file), "%s.fp", a.disks[i].name);
		r = publish_file(b, a.vm, state, file);
	}
	if (r >= 0)
		r = publish_file(b, a.vm, state, "progress");
	if (r < 0)
		return 1;
	_cleanup_(ferry_cache_freep) struct ferry_cache *reverse = NULL;
	struct ferry_ack ack = { vm.applied_seq, vm.applied_digest };
	r = ferry_cache_open(a.cache, 1, &reverse);
	if (r >= 0)
		r = ferry_cache_put_ack(reverse, a.vm, &ack);
	if (r < 0)
		return log_error_errno(r, "cannot acknowledge the seed in %s", a.cache), 1;

	/* 3. From now on the VM replicates from the reverse cache. */
	struct ferry_catalog *c = ferry_vault_catalog(v);
	snprintf(vm.cache_url, sizeof(vm.cache_url), "%s", a.cache);
	r = ferry_catalog_begin(c);
	if (r >= 0) {
		r = ferry_catalog_vm_update(c, &vm);
		if (r >= 0)
			r = ferry_catalog_resource_set(c, vm.id, "cache", a.cache);
		if (r >= 0)
			r = ferry_catalog_job_add(c, vm.id, "reprotect-prepare", "succeeded",
						  "seeded from the original disks", NULL);
		if (r >= 0)
			r = ferry_catalog_commit(c);
		else
			ferry_catalog_rollback(c);
	}
	/* The store's copy of the VM follows, so attach restores it. */
	if (r >= 0)
		r = record_vm_write(v, vm.id);
	if (r < 0)
		return log_error_errno(r, "cannot switch VM %s to cache %s", a.vm, a.cache), 1;
	fprintf(stderr,
		"Seed published in %s. At the target site run:\n"
		"  ferry reprotect --vault TARGET-VAULT %s --mount MOUNT --cache %s\n"
		"and here: ferry-replicator --vault %s\n",
		a.cache, a.vm, a.cache, a.vault);
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

static int set_state_job(struct ferry_vault *v, struct ferry_vm *vm, enum ferry_vm_state s,
			 const char *job, const char *detail, int64_t drop_failover)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	vm->state = s;
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = ferry_catalog_vm_update(c, vm);
	if (r >= 0 && drop_failover > 0)
		r = ferry_catalog_failover_delete(c, drop_failover);
	if (r >= 0)
		r = ferry_catalog_job_add(c, vm->id, job, "succeeded", detail, NULL);
	if (r >= 0)
		r = ferry_catalog_event_add(c, vm->id, "info", job);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	return ferry_catalog_commit(c);
}

static const char reprotect_help[] =
	"Usage: ferry reprotect --vault DIR VM --mount MOUNT --cache URL [--agent-config FILE]\n"
	"\n"
	"At the target site, after 'ferry reprotect-prepare' at the source: writes an\n"
	"agent configuration that replicates the failed-over VM (its clone, as seen\n"
	"in the ferryfs mount MOUNT) into the reverse cache URL, starting from the\n"
	"source's seed, so only blocks that differ from the original disks travel.\n"
	"Default configuration file: DIR/agents/VM.reprotect.conf.\n";

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
	_cleanup_free_ char *vault_abs = realpath(a.vault, NULL), *mount = realpath(a.mount, NULL);
	if (!vault_abs || !mount)
		return log_error_errno(-errno, "cannot resolve %s or %s", a.vault, a.mount), 1;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	if (open_vault(vault_abs, 0, &v) < 0 || get_vm(v, a.vm, &vm) < 0)
		return 1;
	struct failover_find ff = { 0 };
	if (vm.state != FERRY_VM_FAILED_OVER && vm.state != FERRY_VM_COMMITTED &&
	    vm.state != FERRY_VM_REPROTECTING)
		return log_error("VM %s is not failed over (state: %s)", vm.name,
				 ferry_vm_state_name(vm.state)),
		       1;
	r = ferry_catalog_failover_list(ferry_vault_catalog(v), vm.id, find_real, &ff);
	if (r < 0 || !ff.have)
		return log_error("VM %s has no failover to re-protect", vm.name), 1;

	struct clone_paths cp = { .mount = mount, .vm = vm.name, .failover = ff.f.name };
	r = ferry_catalog_clone_disks(ferry_vault_catalog(v), ff.f.id, add_clone_path, &cp);
	_cleanup_free_ char *state = NULL, *conf = NULL;
	if (r >= 0 && asprintf(&state, "%s/agents/%s.reprotect.state", vault_abs, vm.name) < 0)
		r = -ENOMEM;
	if (r >= 0 && a.agent_config)
		conf = absolute(a.agent_config);
	else if (r >= 0 && asprintf(&conf, "%s/agents/%s.reprotect.conf", vault_abs, vm.name) < 0)
		conf = NULL;
	if (r >= 0 && (!state || !conf))
		r = -ENOMEM;
	for (size_t i = 0; r >= 0 && i < cp.n; i++)
		if (access(cp.disks[i].path, R_OK) < 0) {
			log_error("clone image %s is not readable: is the vault mounted at %s?",
				  cp.disks[i].path, mount);
			r = -ENOENT;
		}

	/* The seed becomes the agent's last cycle. */
	_cleanup_(ferry_blobs_freep) struct ferry_blobs *b = NULL;
	if (r >= 0)
		r = ferry_mkdir_p(state, 0700);
	if (r >= 0) {
		r = ferry_blobs_open(a.cache, 0, &b);
		if (r < 0)
			log_error_errno(r, "cannot open cache %s", a.cache);
	}
	for (size_t i = 0; r >= 0 && i < cp.n; i++) {
		char file[FERRY_NAME_MAX + 8];
		snprintf(file, sizeof(file), "%s.fp", cp.disks[i].name);
		r = fetch_file(b, vm.name, state, file);
	}
	if (r >= 0)
		r = fetch_file(b, vm.name, state, "progress");

	/* No chunk-size: the source vault's is not known here; the agent
	 * takes the default. */
	const struct agentconf ac = {
		.vm = vm.name,
		.cache = (char *)a.cache,
		.state = state,
		.interval = 60,
		.disks = cp.disks,
		.ndisks = cp.n,
	};
	if (r >= 0)
		r = agentconf_write(
			&ac, conf,
			"re-protecting it to the source site, written by ferry reprotect");
	for (size_t i = 0; i < cp.n; i++) {
		free(cp.disks[i].name);
		free(cp.disks[i].path);
	}
	if (r < 0)
		return log_error_errno(r, "cannot set up re-protection of VM %s", vm.name), 1;
	r = set_state_job(v, &vm, FERRY_VM_REPROTECTING, "reprotect", a.cache, 0);
	if (r < 0)
		return log_error_errno(r, "cannot record re-protection of VM %s", vm.name), 1;
	printf("%s\n", conf);
	fprintf(stderr,
		"VM %s re-protects to %s. Run here: ferry-agent --config %s\n"
		"When ready to fail back: stop the VM, run one last 'ferry-agent --config %s "
		"--once',\nthen 'ferry failback' at the source site.\n",
		vm.name, a.cache, conf, conf);
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

static const char failback_help[] =
	"Usage: ferry failback --vault DIR VM\n"
	"\n"
	"At the source site, after the VM was stopped at the target and its agent\n"
	"ran one last cycle: applies what is left in the reverse cache, then brings\n"
	"the original disk files to the failed-over VM's state by writing only the\n"
	"blocks that differ. Then run 'ferry resume-replication' at the target site.\n";

int cmd_failback(int argc, char **argv)
{
	struct rp_args a = { 0 };
	int r = parse_rp(argc, argv, failback_help, &a, 1);
	if (r >= 0)
		return r;
	_cleanup_close_ int lock = -1;
	r = maint_lock(a.vault, "writer", &lock);
	if (r < 0)
		return log_error_errno(r, "cannot lock vault %s (stop its replicator)", a.vault), 1;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	if (open_vault(a.vault, 0, &v) < 0 || get_vm(v, a.vm, &vm) < 0)
		return 1;
	if (vm.marker_seq == 0)
		return log_error("VM %s has no re-protected state to fail back to", vm.name), 1;
	r = replicate_vm(v, &vm, NULL);
	if (r < 0)
		return log_error("VM %s: the final delta could not be applied", vm.name), 1;
	if (get_vm(v, a.vm, &vm) < 0)
		return 1;

	struct failback_ctx fc = { .v = v };
	r = ferry_chunk_cache_new(v, 64u << 20, &fc.cc);
	if (r >= 0)
		r = ferry_catalog_disk_list(ferry_vault_catalog(v), vm.id, failback_disk, &fc);
	ferry_chunk_cache_free(fc.cc);
	if (r < 0 || fc.failed)
		return 1;
	char detail[64];
	snprintf(detail, sizeof(detail), "%llu bytes rewritten", (unsigned long long)fc.written);
	r = set_state_job(v, &vm, FERRY_VM_FAILED_BACK, "failback", detail, 0);
	if (r < 0)
		return log_error_errno(r, "cannot record the failback of VM %s", vm.name), 1;
	printf("%llu\n", (unsigned long long)fc.written);
	fprintf(stderr,
		"VM %s failed back: %s. At the target site run\n"
		"  ferry resume-replication --vault TARGET-VAULT %s\n"
		"and restart the VM and its agent here.\n",
		vm.name, detail, vm.name);
	return 0;
}

int cmd_resume_replication(int argc, char **argv)
{
	struct rp_args a = { 0 };
	int r = parse_rp(
		argc, argv,
		"Usage: ferry resume-replication --vault DIR VM\n\n"
		"At the target site, after failback: ends the failover (its clone goes at\n"
		"the next garbage collection) and resumes forward protection of the VM;\n"
		"its agent at the source ships only what changed.\n",
		&a, 1);
	if (r >= 0)
		return r;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	if (open_vault(a.vault, 0, &v) < 0 || get_vm(v, a.vm, &vm) < 0)
		return 1;
	if (vm.state != FERRY_VM_FAILED_OVER && vm.state != FERRY_VM_COMMITTED &&
	    vm.state != FERRY_VM_REPROTECTING)
		return log_error("VM %s is not failed over (state: %s)", vm.name,
				 ferry_vm_state_name(vm.state)),
		       1;
	struct failover_find ff = { 0 };
	r = ferry_catalog_failover_list(ferry_vault_catalog(v), vm.id, find_real, &ff);
	if (r < 0)
		return log_error_errno(r, "cannot read VM %s", vm.name), 1;
	r = set_state_job(v, &vm, FERRY_VM_PROTECTED, "resume-replication",
			  ff.have ? ff.f.name : "", ff.have ? ff.f.id : 0);
	if (r < 0)
		return log_error_errno(r, "cannot resume replication of VM %s", vm.name), 1;
	fprintf(stderr, "Forward protection of VM %s resumed.\n", vm.name);
	return 0;
}
