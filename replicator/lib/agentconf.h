/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The agent configuration file (ferry-agent(8), CONFIGURATION FILE): the
 * reader ferry-agent starts from and the writer `ferry enable-replication`
 * and `ferry reprotect` use, one module so that what the CLI writes is
 * exactly what the agent reads. An INI file, parsed with inih: [agent]
 * (version, vm, cache, state, interval, chunk-size, tracker, qmp,
 * nbd-socket, group, group-interval, group-pause-limit, qga,
 * app-interval, freeze-timeout, domain, connect, run-dir), one [disk] (name,
 * and path for the scan tracker, node for the qemu tracker or target for
 * the libvirt tracker) per disk in index order, optional [credentials].
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "agent-scan.h"

#define AGENTCONF_VERSION 1
#define AGENTCONF_DEFAULT_INTERVAL 300u
#define AGENTCONF_MAX_INTERVAL (366u * 24u * 3600u)
#define AGENTCONF_MAX_DISKS 256
#define AGENTCONF_MAX_CHUNK_SIZE (4u * 1024u * 1024u)
/* Consistency groups: seconds between rounds, and how long the VM may stay
 * paused waiting for the other members, in ms (defaults and bounds). */
#define AGENTCONF_DEFAULT_GROUP_INTERVAL 60u
#define AGENTCONF_DEFAULT_GROUP_PAUSE_LIMIT_MS 2000u
#define AGENTCONF_MAX_GROUP_PAUSE_LIMIT_MS 60000u
/* App-consistent cuts: the longest a guest freeze may hold, in seconds. */
#define AGENTCONF_DEFAULT_FREEZE_TIMEOUT 10u
#define AGENTCONF_MAX_FREEZE_TIMEOUT 600u

/* Keys of [credentials] (azure_connection_string, ..., aws_endpoint_url),
 * the indexes of agentconf.creds; each overrides the environment variable
 * of the same meaning (ferry-agent(8)). */
enum agentconf_cred {
	AGENTCONF_AZURE_CONNECTION_STRING,
	AGENTCONF_AZURE_ACCOUNT,
	AGENTCONF_AZURE_KEY,
	AGENTCONF_AZURE_SAS_TOKEN,
	AGENTCONF_AWS_ACCESS_KEY_ID,
	AGENTCONF_AWS_SECRET_ACCESS_KEY,
	AGENTCONF_AWS_SESSION_TOKEN,
	AGENTCONF_AWS_REGION,
	AGENTCONF_AWS_ENDPOINT_URL,
	AGENTCONF_NCREDS,
};

enum agentconf_tracker {
	AGENTCONF_TRACKER_SCAN, /* reads the disk files (agent-scan.h) */
	AGENTCONF_TRACKER_QEMU, /* a running qemu's dirty bitmaps (agent-qemu.h) */
	/* a libvirt domain's checkpoints and backups (agent-libvirt.h) */
	AGENTCONF_TRACKER_LIBVIRT,
};

/*
 * A parsed configuration. Every string is malloc'd and owned by the struct
 * (agentconf_free releases them); a loaded one satisfies all of the rules
 * below. To write one, the caller fills it with its own strings and frees
 * nothing: agentconf_write only reads it.
 */
struct agentconf {
	char *vm;    /* a valid name (ferry_name_valid) */
	char *cache; /* cache URL or directory, not empty; not checked further */
	char *state; /* state directory, not empty; not checked further */
	/* Seconds between cycle starts, 0 to AGENTCONF_MAX_INTERVAL;
	 * AGENTCONF_DEFAULT_INTERVAL when the file has none. */
	uint64_t interval;
	/* When has_chunk_size: 0 (whole segments compressed, format 1.0) or a
	 * power of two from 4096 to AGENTCONF_MAX_CHUNK_SIZE. Without it the
	 * agent picks its default. */
	uint32_t chunk_size;
	int has_chunk_size;
	/* scan when the file names none. qemu: qmp is the QMP socket (not
	 * empty), nbd_socket an NBD server qemu already runs (or NULL), and
	 * each disk's path holds its block node name (key "node"). scan: qmp
	 * and nbd_socket NULL, and each disk's path its file (key "path"). */
	enum agentconf_tracker tracker;
	char *qmp;
	char *nbd_socket;
	/* libvirt: domain is the domain's name (not empty), connect its
	 * libvirt URI (NULL: qemu:///system), run_dir where libvirt's qemu
	 * finds the backup's socket and scratch files (NULL: the tracker's
	 * default), and each disk's path holds its target, vda ... (key
	 * "target"). All three NULL for the other trackers. */
	char *domain;
	char *connect;
	char *run_dir;
	/* The VM's consistency group (key "group", a valid name), or NULL:
	 * only with the qemu tracker. group_interval: seconds between the
	 * group's rounds, 1 to AGENTCONF_MAX_INTERVAL (key "group-interval",
	 * AGENTCONF_DEFAULT_GROUP_INTERVAL when absent); group_pause_limit_ms:
	 * the longest the VM stays paused for a round, 1 to
	 * AGENTCONF_MAX_GROUP_PAUSE_LIMIT_MS (key "group-pause-limit",
	 * AGENTCONF_DEFAULT_GROUP_PAUSE_LIMIT_MS when absent). Both keys only
	 * with "group"; written only when group is set. */
	char *group;
	uint64_t group_interval;
	uint64_t group_pause_limit_ms;
	/* App-consistent cuts, only with the qemu tracker: qga is the guest
	 * agent's socket (key "qga") or NULL; app_interval the seconds
	 * between app-consistent cuts, 0 (off, when absent) to
	 * AGENTCONF_MAX_INTERVAL, nonzero only with qga or with the libvirt
	 * tracker, which freezes through libvirt (key "app-interval");
	 * freeze_timeout the longest a freeze holds the guest, 1 to
	 * AGENTCONF_MAX_FREEZE_TIMEOUT seconds (key "freeze-timeout", only
	 * with qga; AGENTCONF_DEFAULT_FREEZE_TIMEOUT when absent). The three
	 * are written only when qga is set. */
	char *qga;
	uint64_t app_interval;
	uint64_t freeze_timeout;
	/* 1 to AGENTCONF_MAX_DISKS, in file order (the disk index); names
	 * valid and distinct, paths (nodes) not empty. */
	struct agent_disk *disks;
	size_t ndisks;
	/* [credentials], NULL where absent (has_creds: any given); secrets:
	 * never logged, wiped by agentconf_free, never written by
	 * agentconf_write. */
	char *creds[AGENTCONF_NCREDS];
	int has_creds;
};

/*
 * Reads and checks the configuration at path. On success fills *ret, which
 * the caller releases with agentconf_free. On failure logs one error that
 * names the file and line (a value only when it is no secret), leaves *ret
 * alone and returns -EINVAL for the text (syntax, unknown section or key, a
 * key twice, a bad value, a line over 197 bytes, a required key missing),
 * -ENOMEM, or the -errno of opening the file. Warns when the file holds
 * credentials and others may read it.
 */
int agentconf_load(const char *path, struct agentconf *ret);

/* Releases what c holds and zeroes it; NULL and a zeroed struct are fine. */
void agentconf_free(struct agentconf *c);

/*
 * The text of c as a configuration file, headed by comments naming why (a
 * phrase, e.g. "written by ferry enable-replication") and path. Refuses
 * what agentconf_load would not read back as it is: -EINVAL for a value
 * that breaks one of the rules of struct agentconf, or is empty, holds a
 * line break, starts or ends with a blank, starts with ';' or has a blank
 * before one (a comment to the reader); -ENAMETOOLONG for a line over 197
 * bytes. Logs the reason. On success *ret_text (malloc'd, the caller frees
 * it) holds *ret_len bytes.
 */
int agentconf_format(const struct agentconf *c, const char *path, const char *why, char **ret_text,
		     size_t *ret_len);

/* agentconf_format, then the text into path atomically (temporary file,
 * fsync, rename). */
int agentconf_write(const struct agentconf *c, const char *path, const char *why);

/* Parses a number of seconds, 0 to AGENTCONF_MAX_INTERVAL, digits only: the
 * interval key and ferry-agent --interval. -EINVAL or -ERANGE otherwise. */
int agentconf_parse_interval(const char *s, uint64_t *ret);
