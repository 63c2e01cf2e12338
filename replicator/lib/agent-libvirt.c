/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The `libvirt` tracker (agent-libvirt.h for what it does and why). libvirt
 * is reached through virtdom.h; what follows the backup's start, reading
 * and shipping, is viewship.h's. Files it keeps:
 *   STATE/libvirt.checkpoint   the last checkpoint whose changes are in the
 *                              cache (docs/format/agent-state.md)
 *   RUN/nbd.sock               the backup's NBD server (qemu makes it)
 *   RUN/scratch-<target>.qcow2 the backup's scratch files (libvirt makes
 *                              and removes them)
 * RUN belongs to the user libvirt runs qemu as, so that qemu can create
 * the socket there; nobody else may enter it.
 */
#include "agent-libvirt.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "ferry/vmdef.h"
#include "viewship.h"
#include "virtdom.h"

#define TARGET_MAX 32
/* Generations tried when a checkpoint's name is taken (a bitmap of that
 * name left in a qcow2 by an earlier definition of the domain). */
#define NAME_TRIES 8

struct ldisk {
	const char *name, *target;
	struct viewship_disk *vd;
	char *scratch;
	char bitmap[TARGET_MAX + 8]; /* backup-<target> */
};

struct agent_libvirt {
	const struct agent_libvirt_params *p;
	struct ldisk *disks;
	struct viewship *vs;
	struct virtdom *d;
	const char *uri;
	char *run_dir, *sock, *record;
	char prefix[FERRY_NAME_MAX + 8]; /* ferry-<vm>- */
	/* The domain's other disks (cdroms, disks Ferry does not replicate):
	 * the backup and the checkpoint leave them out by name. */
	char **others;
	size_t nothers;
	uint64_t gen;      /* of the recorded checkpoint; 0: none */
	int have_cp;       /* libvirt holds checkpoint gen */
	uint64_t next_gen; /* of the checkpoint the next cycle makes */
	int reconciled;    /* since the last (re)connection or failure */
	int thawed_once;   /* the thaw at the first connection was tried */
	struct agent_scan_stats st;
	struct viewship_app app; /* app-consistent cuts (viewship.h) */
};

/* ---- names and XML ---- */

static int target_valid(const char *s)
{
	size_t n = strlen(s);
	return n > 0 && n < TARGET_MAX &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

static void checkpoint_name(const struct agent_libvirt *al, uint64_t gen, char *buf, size_t size)
{
	snprintf(buf, size, "%s%" PRIu64, al->prefix, gen);
}

/* The generation of one of our checkpoints, or 0 for any other name. */
static uint64_t checkpoint_gen(const struct agent_libvirt *al, const char *name)
{
	size_t n = strlen(al->prefix);
	uint64_t g;
	if (strncmp(name, al->prefix, n) != 0 || name[n] < '1' || name[n] > '9' ||
	    ferry_parse_u64(name + n, strlen(name + n), UINT64_MAX - 1, &g) < 0)
		return 0;
	return g;
}

static int close_memstream(FILE *f, char **buf, char **ret)
{
	int bad = ferror(f);
	if (fclose(f) != 0 || bad) {
		free(*buf);
		*buf = NULL;
		return -ENOMEM;
	}
	*ret = *buf;
	*buf = NULL;
	return 0;
}

/* The checkpoint to create: every disk of ours gets a bitmap. */
static int checkpoint_xml(const struct agent_libvirt *al, uint64_t gen, char **ret)
{
	char *buf = NULL, name[FERRY_NAME_MAX + 32];
	size_t len;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	checkpoint_name(al, gen, name, sizeof(name));
	fprintf(f, "<domaincheckpoint>\n  <name>%s</name>\n", name);
	fprintf(f,
		"  <description>Ferry: what changed since, VM %s ships at its next "
		"cycle</description>\n  <disks>\n",
		al->p->ship.vm);
	for (size_t i = 0; i < al->p->ship.ndisks; i++)
		fprintf(f, "    <disk name='%s' checkpoint='bitmap'/>\n", al->disks[i].target);
	for (size_t i = 0; i < al->nothers; i++)
		fprintf(f, "    <disk name='%s' checkpoint='no'/>\n", al->others[i]);
	fprintf(f, "  </disks>\n</domaincheckpoint>\n");
	return close_memstream(f, &buf, ret);
}

/* The pull-mode backup: incremental from the recorded checkpoint, or
 * full (allocation only) with incremental 0. */
static int backup_xml(const struct agent_libvirt *al, int incremental, char **ret)
{
	char *buf = NULL, base[FERRY_NAME_MAX + 32];
	size_t len;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f, "<domainbackup mode='pull'>\n");
	if (incremental) {
		checkpoint_name(al, al->gen, base, sizeof(base));
		fprintf(f, "  <incremental>%s</incremental>\n", base);
	}
	fprintf(f, "  <server transport='unix' socket='");
	ferry_vmdef_xml_escape(f, al->sock);
	fprintf(f, "'/>\n  <disks>\n");
	for (size_t i = 0; i < al->p->ship.ndisks; i++) {
		const struct ldisk *d = &al->disks[i];
		fprintf(f, "    <disk name='%s' backup='yes' type='file' exportname='%s'",
			d->target, d->target);
		if (incremental)
			fprintf(f, " exportbitmap='%s'", d->bitmap);
		fprintf(f, ">\n      <scratch file='");
		ferry_vmdef_xml_escape(f, d->scratch);
		fprintf(f, "'/>\n    </disk>\n");
	}
	for (size_t i = 0; i < al->nothers; i++)
		fprintf(f, "    <disk name='%s' backup='no'/>\n", al->others[i]);
	fprintf(f, "  </disks>\n</domainbackup>\n");
	return close_memstream(f, &buf, ret);
}

/* ---- errors ---- */

static int virt_fail(struct agent_libvirt *al, int r, const char *what)
{
	const char *why = virtdom_last_error();
	log_error("VM %s: domain %s: %s: %s", al->p->ship.vm, al->p->domain, what,
		  *why ? why : strerror(-r));
	return r;
}

/* ---- the run directory ---- */

/* Whether uid (with group gid and its supplementary groups) may search a
 * directory of these attributes. */
static int may_search(const struct stat *st, uid_t uid, gid_t gid, const gid_t *groups, int n)
{
	if (uid == 0)
		return 1;
	if (st->st_uid == uid)
		return !!(st->st_mode & S_IXUSR);
	int member = st->st_gid == gid;
	for (int i = 0; !member && i < n; i++)
		member = st->st_gid == groups[i];
	return !!(st->st_mode & (member ? S_IXGRP : S_IXOTH));
}

/*
 * Makes the run directory qemu's: created where missing (its parents 0711,
 * so that qemu may pass them), given to the user and group libvirt runs
 * qemu as (uid, gid; -1: unknown, left as it is) with mode 0700. Fails,
 * naming the directory, where qemu could not get to it.
 */
static int prepare_run_dir(struct agent_libvirt *al, int64_t uid, int64_t gid)
{
	const char *dir = al->run_dir;
	int r = ferry_mkdir_p(dir, 0711);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot create the run directory %s",
				       al->p->ship.vm, dir);
	if (uid < 0 || gid < 0)
		return 0;
	struct stat st;
	if (stat(dir, &st) < 0)
		return log_error_errno(-errno, "VM %s: cannot stat %s", al->p->ship.vm, dir);
	if ((st.st_uid != (uid_t)uid || st.st_gid != (gid_t)gid) && geteuid() == 0 &&
	    chown(dir, (uid_t)uid, (gid_t)gid) < 0)
		return log_error_errno(-errno,
				       "VM %s: cannot give %s to libvirt's qemu (%" PRId64
				       ":%" PRId64 ")",
				       al->p->ship.vm, dir, uid, gid);
	if (chmod(dir, 0700) < 0 && errno != EPERM)
		return log_error_errno(-errno, "VM %s: cannot chmod %s", al->p->ship.vm, dir);
	if (stat(dir, &st) < 0)
		return log_error_errno(-errno, "VM %s: cannot stat %s", al->p->ship.vm, dir);
	if (st.st_uid != (uid_t)uid && uid != 0)
		return log_error_errno(-EACCES,
				       "VM %s: the run directory %s belongs to uid %u, not to the "
				       "user libvirt runs qemu as (uid %" PRId64
				       "), and only root may give it away: run ferry-agent as "
				       "root, or make run-dir a directory of that user",
				       al->p->ship.vm, dir, (unsigned)st.st_uid, uid);
	/* Every directory above must let qemu pass. */
	gid_t groups[256];
	int ngroups = ARRAY_SIZE(groups);
	char pwbuf[4096];
	struct passwd pw, *res = NULL;
	if (getpwuid_r((uid_t)uid, &pw, pwbuf, sizeof(pwbuf), &res) != 0 || !res ||
	    getgrouplist(res->pw_name, (gid_t)gid, groups, &ngroups) < 0)
		ngroups = 0;
	_cleanup_free_ char *path = strdup(dir);
	if (!path)
		return -ENOMEM;
	for (char *s = path + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (stat(path, &st) == 0 &&
		    !may_search(&st, (uid_t)uid, (gid_t)gid, groups, ngroups))
			return log_error_errno(
				-EACCES,
				"VM %s: libvirt's qemu (uid %" PRId64 ") cannot reach the run "
				"directory %s: %s (mode %04o) does not let it pass; allow it "
				"(chmod o+x %s) or set run-dir to a directory it can reach",
				al->p->ship.vm, uid, dir, path, (unsigned)(st.st_mode & 07777),
				path);
		*s = '/';
	}
	return 0;
}

/* Removes the socket and scratch files a killed agent's job left. */
static void clear_run_dir(struct agent_libvirt *al)
{
	if (unlink(al->sock) < 0 && errno != ENOENT)
		log_warning("VM %s: cannot remove %s: %m", al->p->ship.vm, al->sock);
	for (size_t i = 0; i < al->p->ship.ndisks; i++)
		if (unlink(al->disks[i].scratch) < 0 && errno != ENOENT)
			log_warning("VM %s: cannot remove %s: %m", al->p->ship.vm,
				    al->disks[i].scratch);
}

/* ---- the recorded checkpoint ---- */

static uint64_t record_read(struct agent_libvirt *al)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = ferry_read_file(al->record, (void **)&text, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		log_warning_errno(r, "VM %s: cannot read %s", al->p->ship.vm, al->record);
		return 0;
	}
	while (len > 0 && text[len - 1] == '\n')
		text[--len] = 0;
	uint64_t g = checkpoint_gen(al, text);
	if (!g || strlen(text) != len)
		log_warning("VM %s: %s does not name a checkpoint of this VM; it is ignored",
			    al->p->ship.vm, al->record);
	return g;
}

static int record_write(struct agent_libvirt *al, uint64_t gen)
{
	char text[FERRY_NAME_MAX + 40];
	checkpoint_name(al, gen, text, sizeof(text));
	strcat(text, "\n");
	int r = ferry_write_file_atomic(al->record, text, strlen(text));
	if (r < 0)
		log_warning_errno(r, "VM %s: cannot record checkpoint %" PRIu64 " in %s",
				  al->p->ship.vm, gen, al->record);
	return r;
}

/* Deletes one of our checkpoints; gone already is fine. */
static int delete_checkpoint(struct agent_libvirt *al, uint64_t gen)
{
	char name[FERRY_NAME_MAX + 32];
	checkpoint_name(al, gen, name, sizeof(name));
	int r = virtdom_checkpoint_delete(al->d, name);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		log_warning("VM %s: domain %s: cannot delete checkpoint %s: %s", al->p->ship.vm,
			    al->p->domain, name, virtdom_last_error());
	return r;
}

/* ---- (re)connection ---- */

/* The domain's disks: ours must be there, and qcow2. */
static int check_disks(struct agent_libvirt *al, const struct virtdom_info *info)
{
	const struct agent_libvirt_params *p = al->p;
	for (size_t i = 0; i < p->ship.ndisks; i++) {
		const struct ldisk *d = &al->disks[i];
		const struct virtdom_disk *vd = virtdom_find_disk(info, d->target);
		if (!vd || !vd->is_disk)
			return log_error_errno(-ENOENT,
					       "VM %s: domain %s has no disk with target %s "
					       "(disk %s)",
					       p->ship.vm, p->domain, d->target, d->name);
		if (!vd->format || strcmp(vd->format, "qcow2") != 0)
			return log_error_errno(
				-EOPNOTSUPP,
				"VM %s: disk %s (target %s, %s) of domain %s is %s, not qcow2: "
				"libvirt keeps checkpoints, and so incremental backups, of "
				"qcow2 disks only; convert it (qemu-img convert -O qcow2) while "
				"the domain is shut off, or replicate the VM another way "
				"(Ferry never reads a running domain's files itself)",
				p->ship.vm, d->name, d->target, vd->source ?: "no source",
				p->domain, vd->format ?: "of no format");
	}
	virtdom_strv_free(al->others, al->nothers);
	al->others = NULL;
	al->nothers = 0;
	for (size_t k = 0; k < info->ndisks; k++) {
		const char *t = info->disks[k].target;
		int ours = 0;
		for (size_t i = 0; i < p->ship.ndisks; i++)
			ours |= strcmp(al->disks[i].target, t) == 0;
		if (ours || !target_valid(t))
			continue;
		char **a = realloc(al->others, (al->nothers + 1) * sizeof(*a));
		if (!a)
			return -ENOMEM;
		al->others = a;
		if (!(a[al->nothers] = strdup(t)))
			return -ENOMEM;
		al->nothers++;
	}
	return 0;
}

/* A backup job that runs: this tracker's (its socket) ends, anybody
 * else's is left alone and fails the cycle. */
static int end_leftover_job(struct agent_libvirt *al)
{
	_cleanup_free_ char *xml = NULL;
	int r = virtdom_backup_xml(al->d, &xml);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return virt_fail(al, r, "cannot ask for a running backup job");
	if (!strstr(xml, al->sock))
		return log_error_errno(-EBUSY,
				       "VM %s: domain %s runs a backup job that is not Ferry's; "
				       "libvirt runs one at a time: the next cycle tries again",
				       al->p->ship.vm, al->p->domain);
	log_info("VM %s: domain %s: ending the backup job an earlier agent left", al->p->ship.vm,
		 al->p->domain);
	r = virtdom_abort_job(al->d);
	return r < 0 && r != -ENOENT ? virt_fail(al, r, "cannot end that backup job") : 0;
}

/*
 * What libvirt holds against what the state directory says: the recorded
 * checkpoint carries on; every other checkpoint of ours (a cycle that did
 * not finish, or one whose deletion failed) goes.
 */
static int reconcile_checkpoints(struct agent_libvirt *al)
{
	char **names = NULL;
	size_t n = 0;
	int r = virtdom_checkpoints(al->d, &names, &n);
	if (r < 0)
		return virt_fail(al, r, "cannot list its checkpoints");
	al->gen = record_read(al);
	al->have_cp = 0;
	uint64_t top = al->gen;
	for (size_t i = 0; i < n; i++) {
		uint64_t g = checkpoint_gen(al, names[i]);
		if (!g)
			continue;
		if (g == al->gen) {
			al->have_cp = 1;
			continue;
		}
		log_info("VM %s: domain %s: deleting checkpoint %s, which no cycle recorded",
			 al->p->ship.vm, al->p->domain, names[i]);
		if (delete_checkpoint(al, g) < 0)
			top = MAX(top, g);
	}
	virtdom_strv_free(names, n);
	al->next_gen = MAX(top, al->next_gen > 0 ? al->next_gen - 1 : 0) + 1;
	if (al->gen && !al->have_cp) {
		char name[FERRY_NAME_MAX + 32];
		checkpoint_name(al, al->gen, name, sizeof(name));
		log_warning("VM %s: domain %s no longer has checkpoint %s (the domain was "
			    "redefined, or its bitmaps were lost)",
			    al->p->ship.vm, al->p->domain, name);
	}
	return 0;
}

/* A guest frozen by an agent that died before its thaw stays frozen: the
 * first connection of an agent that freezes thaws it (a guest that is not
 * frozen, or has no guest agent, is left as it is). */
static int thaw_due(struct agent_libvirt *al)
{
	if (!al->p->freezes || al->thawed_once)
		return 0;
	al->thawed_once = 1;
	return 1;
}

static int reconcile(struct agent_libvirt *al)
{
	int r = virtdom_active(al->d);
	if (r < 0)
		return virt_fail(al, r, "cannot ask whether it runs");
	if (r == 0)
		return log_error_errno(-ESRCH,
				       "VM %s: domain %s is not running: libvirt backs up running "
				       "domains only; cycles resume when it runs",
				       al->p->ship.vm, al->p->domain);
	struct virtdom_info info;
	r = virtdom_info(al->d, 0, &info);
	if (r < 0)
		return virt_fail(al, r, "cannot read its XML");
	r = check_disks(al, &info);
	if (r >= 0)
		r = prepare_run_dir(al, info.dac_uid, info.dac_gid);
	virtdom_info_free(&info);
	if (r >= 0)
		r = end_leftover_job(al);
	if (r >= 0 && thaw_due(al) && virtdom_fs_thaw(al->d) > 0)
		log_warning("VM %s: domain %s: its guest was frozen (an agent killed in a "
			    "freeze?); thawed it",
			    al->p->ship.vm, al->p->domain);
	if (r >= 0) {
		clear_run_dir(al);
		r = reconcile_checkpoints(al);
	}
	al->reconciled = r >= 0;
	return r;
}

static int connect_domain(struct agent_libvirt *al)
{
	if (al->d && !virtdom_alive(al->d))
		al->d = virtdom_free(al->d);
	if (!al->d) {
		al->reconciled = 0;
		int r = virtdom_open(al->p->uri, al->p->domain, &al->d);
		if (r == -ENOENT)
			return log_error_errno(r, "VM %s: libvirt at %s has no domain named %s",
					       al->p->ship.vm, al->uri, al->p->domain);
		if (r < 0)
			return log_error_errno(r, "VM %s: cannot connect to libvirt at %s: %s",
					       al->p->ship.vm, al->uri, virtdom_last_error());
	}
	return al->reconciled ? 0 : reconcile(al);
}

/* ---- one cycle ---- */

/* Which disks this cycle reads whole: all of them when the backup cannot
 * be incremental (libvirt's backup is incremental for every disk or
 * none), and any disk without a complete full cycle (viewship). Returns
 * whether the backup is incremental. */
static int plan(struct agent_libvirt *al, int *incremental)
{
	const struct agent_libvirt_params *p = al->p;
	*incremental = al->have_cp;
	for (size_t i = 0; i < p->ship.ndisks; i++)
		al->disks[i].vd->full = !*incremental;
	int any_full = 0;
	for (size_t i = 0; i < p->ship.ndisks; i++) {
		int r = viewship_open_fingerprints(al->vs, al->disks[i].vd,
						   "lost Ferry's libvirt checkpoint");
		if (r < 0)
			return r;
		any_full |= al->disks[i].vd->full;
	}
	if (!any_full || !*incremental)
		return 0;
	*incremental = 0;
	for (size_t i = 0; i < p->ship.ndisks; i++) {
		struct viewship_disk *vd = al->disks[i].vd;
		if (vd->full)
			continue;
		vd->full = 1;
		int r = viewship_open_fingerprints(
			al->vs, vd,
			"is read whole with the VM's other disks (libvirt backs up every disk "
			"incrementally or none)");
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- app-consistent cuts ---- */

void agent_libvirt_want_app(struct agent_libvirt *al)
{
	al->app.want = 1;
}

/* Thaws a guest frozen for the cut; a thaw that fails is tried again, for
 * a frozen guest stops its applications. Returns the file systems thawed,
 * or -errno. */
static int thaw(struct agent_libvirt *al)
{
	int r = -EIO;
	for (int i = 0; i < 5; i++) {
		r = virtdom_fs_thaw(al->d);
		if (r >= 0 || r == -ECONNRESET)
			break;
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	if (r < 0)
		log_error("VM %s: domain %s: cannot thaw the guest's file systems after the cut: "
			  "%s; thaw them (virsh domfsthaw %s)",
			  al->p->ship.vm, al->p->domain, virtdom_last_error(), al->p->domain);
	return r;
}

/*
 * The cut: the backup job and the next checkpoint, at once, under a guest
 * freeze when app asks for one. Sets *consistency and *marker_ns.
 */
static int begin_backup(struct agent_libvirt *al, int incremental, int app, int *consistency,
			int64_t *marker_ns)
{
	_cleanup_free_ char *bxml = NULL, *cxml = NULL;
	int r = backup_xml(al, incremental, &bxml);
	if (r >= 0)
		r = checkpoint_xml(al, al->next_gen, &cxml);
	if (r < 0)
		return r;
	int frozen = 0;
	*consistency = FERRY_CONSISTENCY_CRASH;
	if (app) {
		al->app.attempt_ns = ferry_now_ns();
		int k = virtdom_fs_freeze(al->d);
		frozen = k > 0;
		if (k < 0)
			viewship_app_failed(&al->app, al->p->ship.vm, k,
					    "cannot freeze the guest's file systems: %s",
					    virtdom_last_error());
		else if (k == 0)
			viewship_app_failed(&al->app, al->p->ship.vm, -ENODEV,
					    "the guest froze no file system");
	}
	*marker_ns = ferry_now_ns();
	r = virtdom_backup_begin(al->d, bxml, cxml);
	char saved[512];
	snprintf(saved, sizeof(saved), "%s", r < 0 ? virtdom_last_error() : "");
	if (frozen) {
		int k = thaw(al);
		int64_t window = ferry_now_ns() - *marker_ns;
		if (k < 0)
			viewship_app_failed(&al->app, al->p->ship.vm, k, "the thaw failed: %s",
					    virtdom_last_error());
		else if (k == 0)
			viewship_app_failed(&al->app, al->p->ship.vm, -ETIMEDOUT,
					    "the guest was thawed before the backup began");
		else if (r < 0)
			viewship_app_failed(&al->app, al->p->ship.vm, r,
					    "the backup did not begin while the guest was frozen");
		else {
			*consistency = FERRY_CONSISTENCY_APP;
			log_info("VM %s: app-consistent cut: the guest was frozen for %.1f ms",
				 al->p->ship.vm, (double)window / 1e6);
		}
	}
	/* Those the cycle tries again, differently, are warnings. */
	if (r < 0 && r != -EEXIST && r != -ESTALE && !(r == -ENOENT && incremental))
		log_error("VM %s: domain %s: the backup did not begin: %s", al->p->ship.vm,
			  al->p->domain, saved);
	else if (r < 0)
		log_warning("VM %s: domain %s: the backup did not begin: %s", al->p->ship.vm,
			    al->p->domain, saved);
	return r;
}

int agent_libvirt_cycle(struct agent_libvirt *al, struct agent_scan_stats *ret)
{
	const struct agent_libvirt_params *p = al->p;
	uint64_t cycle = al->st.cycle;
	uint64_t total = al->st.total_shipped_bytes;
	al->st = (struct agent_scan_stats){ .cycle = cycle + 1,
					    .total_shipped_bytes = total,
					    .started_ns = ferry_now_ns(),
					    .source_waiting_bytes = UINT64_MAX };
	int r = connect_domain(al);
	for (size_t i = 0; r >= 0 && i < p->ship.ndisks; i++) {
		struct ldisk *d = &al->disks[i];
		r = virtdom_disk_capacity(al->d, d->target, &d->vd->size);
		if (r < 0)
			r = virt_fail(al, r, "cannot read a disk's size");
		else if (d->vd->size == 0)
			r = log_error_errno(-EINVAL, "VM %s: disk %s (%s) of domain %s has no size",
					    p->ship.vm, d->name, d->target, p->domain);
		al->st.disk_bytes += d->vd->size;
	}
	if (r >= 0)
		r = viewship_begin(al->vs, &al->st);
	int incremental = 0, consistency = FERRY_CONSISTENCY_CRASH, begun = 0, shipped = 0;
	int64_t marker_ns = ferry_now_ns();
	int app = al->app.want;
	al->app.want = 0;
	for (int tries = 0; r >= 0; tries++) {
		r = plan(al, &incremental);
		if (r >= 0)
			r = begin_backup(al, incremental, app, &consistency, &marker_ns);
		if ((r == -ESTALE || r == -ENOENT) && incremental) {
			/* The base's bitmaps are broken (qemu killed, say), or the
			 * base went (deleted by hand): start over from the
			 * fingerprints. */
			log_warning("VM %s: domain %s: checkpoint %s%" PRIu64
				    " cannot serve as a base any more; this cycle reads "
				    "every disk whole",
				    p->ship.vm, p->domain, al->prefix, al->gen);
			(void)delete_checkpoint(al, al->gen);
			al->have_cp = 0;
			r = 0;
			continue;
		}
		if (r == -EEXIST && tries < NAME_TRIES) {
			log_warning("VM %s: domain %s: checkpoint name %s%" PRIu64
				    " is taken, perhaps by a bitmap an earlier definition of the "
				    "domain left in a qcow2 file, which libvirt no longer knows "
				    "(qemu-img bitmap --remove it while the domain is shut off); "
				    "trying the next",
				    p->ship.vm, p->domain, al->prefix, al->next_gen);
			al->next_gen++;
			r = 0;
			continue;
		}
		break;
	}
	begun = r >= 0;
	uint64_t made = al->next_gen;
	if (begun) {
		al->next_gen++;
		for (size_t i = 0; r >= 0 && i < p->ship.ndisks; i++) {
			struct ldisk *d = &al->disks[i];
			r = viewship_read(al->vs, d->vd, al->sock, d->target,
					  incremental ? d->bitmap : NULL);
		}
		if (r >= 0)
			r = viewship_marker(al->vs, consistency, marker_ns, 0);
		shipped = r >= 0;
		int k = virtdom_abort_job(al->d);
		if (k < 0 && k != -ENOENT) {
			virt_fail(al, k, "cannot end the backup job");
			al->reconciled = 0;
		}
	}
	if (shipped && record_write(al, made) >= 0) {
		/* The new checkpoint is the base now; the old one's changes are
		 * in the cache. */
		if (al->have_cp && delete_checkpoint(al, al->gen) < 0)
			al->reconciled = 0;
		al->gen = made;
		al->have_cp = 1;
	} else if (begun && delete_checkpoint(al, made) < 0) {
		/* Kept the previous one: the next incremental covers both. */
		al->reconciled = 0;
	}
	for (size_t i = 0; shipped && i < p->ship.ndisks; i++) {
		viewship_shipped(al->vs, al->disks[i].vd);
		al->disks[i].vd->full = 0;
	}
	if (consistency == FERRY_CONSISTENCY_APP)
		viewship_app_shipped(&al->app, shipped, r, marker_ns);
	/* Whatever failed, the next cycle looks at the domain afresh: it may
	 * have stopped, or changed while it was off. */
	if (r < 0)
		al->reconciled = 0;
	if (r == -ECONNRESET)
		al->d = virtdom_free(al->d);
	viewship_end_stats(&al->st, &al->app, marker_ns);
	if (ret)
		*ret = al->st;
	return r < 0 ? r : 1;
}

/* ---- setup ---- */

int agent_libvirt_new(const struct agent_libvirt_params *p, struct agent_libvirt **ret)
{
	if (p->ship.ndisks == 0 || p->ship.ndisks > UINT16_MAX || !p->domain || !*p->domain)
		return -EINVAL;
	for (size_t i = 0; i < p->ship.ndisks; i++) {
		if (!target_valid(p->ship.disks[i].path))
			return log_error_errno(-EINVAL,
					       "VM %s: disk %s: '%s' is not a disk target of a "
					       "libvirt domain (vda, sdb, ...)",
					       p->ship.vm, p->ship.disks[i].name,
					       p->ship.disks[i].path);
		for (size_t j = 0; j < i; j++)
			if (strcmp(p->ship.disks[i].path, p->ship.disks[j].path) == 0)
				return log_error_errno(-EINVAL,
						       "VM %s: disks %s and %s are both target %s",
						       p->ship.vm, p->ship.disks[j].name,
						       p->ship.disks[i].name,
						       p->ship.disks[i].path);
	}
	_cleanup_free_ struct agent_libvirt *al = calloc(1, sizeof(*al));
	if (!al)
		return -ENOMEM;
	al->p = p;
	al->uri = p->uri ?: VIRTDOM_DEFAULT_URI;
	snprintf(al->prefix, sizeof(al->prefix), "ferry-%s-", p->ship.vm);
	int r = 0;
	if ((p->run_dir ?
		     !(al->run_dir = strdup(p->run_dir)) :
		     asprintf(&al->run_dir, "%s/%s", AGENT_LIBVIRT_RUN_BASE, p->ship.vm) < 0) ||
	    asprintf(&al->sock, "%s/nbd.sock", al->run_dir) < 0 ||
	    asprintf(&al->record, "%s/libvirt.checkpoint", p->ship.state_dir) < 0)
		r = -ENOMEM;
	if (r >= 0 && (al->run_dir[0] != '/' ||
		       strlen(al->sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)))
		r = log_error_errno(-ENAMETOOLONG,
				    "VM %s: the run directory %s must be an absolute path of at "
				    "most %zu bytes (the NBD socket lives there)",
				    p->ship.vm, al->run_dir,
				    sizeof(((struct sockaddr_un *)0)->sun_path) - 10);
	if (r >= 0)
		r = viewship_new(&p->ship, &al->vs);
	if (r >= 0 && !(al->disks = calloc(p->ship.ndisks, sizeof(*al->disks))))
		r = -ENOMEM;
	for (size_t i = 0; r >= 0 && i < p->ship.ndisks; i++) {
		struct ldisk *d = &al->disks[i];
		d->name = p->ship.disks[i].name;
		d->target = p->ship.disks[i].path;
		d->vd = viewship_disk(al->vs, i);
		snprintf(d->bitmap, sizeof(d->bitmap), "backup-%s", d->target);
		if (asprintf(&d->scratch, "%s/scratch-%s.qcow2", al->run_dir, d->target) < 0) {
			d->scratch = NULL;
			r = -ENOMEM;
		}
	}
	if (r < 0) {
		agent_libvirt_free(TAKE_PTR(al));
		return r;
	}
	*ret = TAKE_PTR(al);
	return 0;
}

struct agent_libvirt *agent_libvirt_free(struct agent_libvirt *al)
{
	if (!al)
		return NULL;
	virtdom_free(al->d);
	for (size_t i = 0; al->disks && i < al->p->ship.ndisks; i++)
		free(al->disks[i].scratch);
	free(al->disks);
	viewship_free(al->vs);
	virtdom_strv_free(al->others, al->nothers);
	free(al->run_dir);
	free(al->sock);
	free(al->record);
	free(al);
	return NULL;
}

void agent_libvirt_resync(struct agent_libvirt *al, uint64_t base_seq, const struct ferry_id *prev,
			  int adopted)
{
	viewship_resync(al->vs, base_seq, prev, adopted);
}
