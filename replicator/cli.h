/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The ferry CLI's shared helpers and its verbs, one function per verb:
 * ferry.c (vault and replication), ferry-status.c (status and its
 * health checks), ferry-attach.c (attach, and the VAULT and VM records), ferry-check.c (check, gc), ferry-failover.c (test
 * failover, failover, change of point, commit, jobs; each also for a
 * consistency group), ferry-group.c (recovery-points --group) and ferry-reprotect.c
 * (re-protect, failback, resume). Each verb gets argv from its own name on and returns the exit
 * status: 0 success, 1 failure, 2 usage error.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "agentconf.h"
#include "ferry/catalog.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "ferry/vmdef.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_vault *, ferry_vault_free)

/* Common option parsing: --vault and --help for every verb, plus extras. */
struct opts {
	const char *vault;
	int json, read_data, help;
};

struct option; /* getopt.h */
/* A verb's own option: c is its val in longopts, arg its optarg. 0 to go
 * on, -errno for a usage error (logged here if it needs words). */
typedef int (*cli_opt_fn)(int c, const char *arg, void *userdata);
/* getopt_long over longopts (from argv[1] on), whose --vault ('V'), --json
 * ('j') and --help ('h') are recorded in *o: --help prints help_text, sets
 * o->help and stops. Every other option goes to on_opt (may be NULL).
 * Returns 0, -EINVAL for an unknown option, or on_opt's error; optind is
 * left after the options. */
int parse_opts(int argc, char **argv, const struct option *longopts, struct opts *o,
	       const char *help_text, cli_opt_fn on_opt, void *userdata);
/* parse_opts with --vault, --json, --read-data and --help. */
int parse_common(int argc, char **argv, struct opts *o, const char *help_text);
/* For verbs taking exactly one VM name: returns -1 to go on with *ret_vm
 * set, or an exit status (0 after --help, 2 on a usage error). */
int one_vm_args(int argc, char **argv, const char *help, struct opts *o, const char **ret_vm);
/* An absolute form of path that need not exist yet (malloc'd). */
char *absolute(const char *path);

void format_bytes(uint64_t b, char *buf, size_t size);
void format_age(int64_t ns, char *buf, size_t size);
const char *consistency_name(int c);

/* Removes what a failed init or attach made in dir: everything in it (it
 * was empty or absent, so nothing there is anybody else's), and dir itself
 * unless it existed before (then it is left, empty). Best effort. */
void undo_vault_dir(const char *dir, int existed);

/* Open a vault or find a VM, logging an error a user can act on. */
int open_vault(const char *dir, int readonly, struct ferry_vault **ret);
int get_vm(struct ferry_vault *v, const char *name, struct ferry_vm *ret);

/* The newest point and newest app-consistent point of a VM, and how many:
 * fill with ferry_catalog_point_list(c, vm_id, note_last, &lp). */
struct last_points {
	struct ferry_point last, last_app;
	int have, have_app;
	unsigned count;
};
int note_last(const struct ferry_point *p, void *userdata);
/* Prints a target resource as an indented "kind value" line (the agent's
 * configuration path and the health the replicator last recorded
 * excepted); a ferry_catalog_resource_list callback. */
int res_text(const char *kind, const char *value, void *userdata);

int cmd_status(int argc, char **argv); /* ferry-status.c */
int cmd_check(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_test_failover(int argc, char **argv);
int cmd_test_failover_cleanup(int argc, char **argv);
int cmd_failover(int argc, char **argv);
int cmd_change_recovery_point(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_jobs(int argc, char **argv);
int cmd_attach(int argc, char **argv);
int cmd_resync(int argc, char **argv); /* ferry-resync.c */
/* recovery-points --group: a consistency group's group points (ferry-group.c). */
int cmd_group_points(int argc, char **argv);

/* Records in the store (ferry-attach.c), each through an ingest of its own
 * (ingest.h): call with no transaction open. record_vault_init opens the
 * vault at dir and writes its VAULT record, named by the vault_record
 * setting (ferry init); record_vm_write writes a VM's VM record from what
 * the catalog holds and names it in vms.record. */
int record_vault_init(const char *dir);
int record_vm_write(struct ferry_vault *v, int64_t vm_id);

/* enable-replication (ferry.c), which reprotect-prepare runs too. */
#define MAX_CLI_DISKS 64
#define MAX_CLI_NICS 16

/* Its options, one field each; NULL for a default (see its --help). */
struct enable_args {
	const char *vault, *vm, *cache, *agent_config;
	const char *source_group, *source_network, *source_subnet;
	const char *target_group, *target_network, *target_subnet, *avset;
	uint64_t crash, app, retention, cpus, memory;
	uint64_t interval; /* the agent's; 0: the tracker's default */
	/* Seconds, the rpo-target resource; 0: the default (health.h). */
	uint64_t rpo_target;
	const char *nics[MAX_CLI_NICS];
	size_t nnics;
	/* tracker: "scan" (NULL) or "qemu"; for qemu, qmp is the QMP socket,
	 * nbd_socket optional, and disk_paths hold block node names. */
	const char *tracker, *qmp, *nbd_socket;
	/* qemu tracker: the guest agent's socket, for app-consistent cuts
	 * every app seconds (freeze_timeout: the longest a freeze holds). */
	const char *qga;
	uint64_t freeze_timeout;
	/* qemu tracker: the VM's consistency group (its resource "group"),
	 * the seconds between the group's rounds and the longest a VM stays
	 * paused for one, in ms; 0: the defaults (agentconf.h). */
	const char *group;
	uint64_t group_interval, group_pause_limit;
	/* libvirt tracker (tracker "libvirt"): the domain's name, its libvirt
	 * URI (NULL: qemu:///system) and where libvirt's qemu finds the
	 * backup's socket and scratch files (NULL: the agent's default);
	 * disk_paths hold the disks' targets (vda, ...). */
	const char *libvirt_domain, *connect, *run_dir;
	const char *disk_names[MAX_CLI_DISKS];
	const char *disk_paths[MAX_CLI_DISKS];
	size_t ndisks;
};

/* The defaults of the numeric options. */
/* clang-format off */
#define ENABLE_ARGS_INIT { .crash = 300, .app = 0, .retention = 86400, .cpus = 1, .memory = 1024, \
			  .freeze_timeout = AGENTCONF_DEFAULT_FREEZE_TIMEOUT }
/* clang-format on */

/* Registers VM a->vm in vault a->vault with its disks, target resources and
 * store record, writes its agent configuration, and prints what it did on
 * stdout. Checks a first, as for the command line (names, disks, NICs,
 * ranges). Returns 0, or a -errno already logged (-EEXIST: the VM is
 * already protected). */
int enable_replication(const struct enable_args *a);

/* ferry-libvirt.c. enable_from_libvirt fills a's disks (every disk of
 * a->libvirt_domain named by its target, or the --disk NAME=TARGET given),
 * CPUs, memory and NICs from the domain, into f's storage, and sets the
 * libvirt tracker; refuses, saying why, flags that clash and disks the
 * tracker cannot follow (not qcow2). libvirt_undefine_failover stops and
 * undefines the libvirt domain <vm>-<failover> that a test failover's
 * domain.xml defined (1), when its metadata says it is that one; 0 when
 * there is none, -errno (logged as a warning) when it could not. */
struct libvirt_fill {
	char names[MAX_CLI_DISKS][FERRY_NAME_MAX + 1];
	char targets[MAX_CLI_DISKS][FERRY_NAME_MAX + 1];
	char nics[MAX_CLI_NICS][FERRY_VMDEF_NIC_SPEC_SIZE];
};
int enable_from_libvirt(struct enable_args *a, struct libvirt_fill *f);
int libvirt_undefine_failover(const char *uri, const char *vm, const char *failover);

int cmd_reprotect_prepare(int argc, char **argv);
int cmd_reprotect(int argc, char **argv);
int cmd_failback(int argc, char **argv);
int cmd_resume_replication(int argc, char **argv);
