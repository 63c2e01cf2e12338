/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One libvirt domain, through the libvirt C library: what the `libvirt`
 * tracker (agent-libvirt.h) and the ferry CLI (enable-replication reads a
 * domain's disks, CPUs, memory and NICs; test-failover-cleanup undefines
 * a failover's domain) need of libvirt, and nothing more. libvirt's types
 * and error codes stay in virtdom.c: errors are translated once, here, to
 * -errno (no such domain or checkpoint -ENOENT, libvirtd unreachable
 * -ECONNREFUSED, connection lost -ECONNRESET, permission -EACCES, domain
 * not running -ESRCH, a job already running -EBUSY, something that exists
 * already -EEXIST, a checkpoint whose bitmap is gone or broken -ESTALE,
 * unsupported (a raw disk's checkpoint) -EOPNOTSUPP, a guest agent that
 * does not answer -ETIMEDOUT, anything else -EIO), and libvirt's own
 * message of the last failure is kept per thread (virtdom_last_error)
 * instead of being printed. The domain XML is parsed with libxml2, locked
 * down as for the object stores (no DTD, no network).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The connection URI when none is given. */
#define VIRTDOM_DEFAULT_URI "qemu:///system"

/* A disk of a domain, as its XML describes it. */
struct virtdom_disk {
	char *target; /* <target dev>: "vda" */
	char *source; /* <source file> or <source dev>, or NULL */
	char *format; /* <driver type>: "qcow2", "raw", or NULL */
	char *type;   /* <disk type>: "file", "block", "network", "volume" */
	int is_disk;  /* device='disk' (not a cdrom, floppy or lun) */
};

struct virtdom_nic {
	char *mac;   /* <mac address>, or NULL */
	char *model; /* <model type>, or NULL */
};

/* What the domain XML says that Ferry uses. */
struct virtdom_info {
	char *name;
	unsigned cpus;       /* <vcpu> (its current attribute when set) */
	uint64_t memory_kib; /* <currentMemory>, else <memory> */
	struct virtdom_disk *disks;
	size_t ndisks;
	struct virtdom_nic *nics;
	size_t nnics;
	/* The owner libvirt gives qemu (the live <seclabel model='dac'>
	 * label, "+UID:+GID" or names), or -1 where the XML does not say. */
	int64_t dac_uid, dac_gid;
};

/* Parses a domain XML (len bytes at xml). -EBADMSG for what is not one. */
int virtdom_parse(const char *xml, size_t len, struct virtdom_info *ret);
void virtdom_info_free(struct virtdom_info *i);
/* The disk of info whose target is target, or NULL. */
const struct virtdom_disk *virtdom_find_disk(const struct virtdom_info *i, const char *target);

struct virtdom;

/* Connects to libvirt at uri (NULL: VIRTDOM_DEFAULT_URI) and looks up the
 * domain named name. */
int virtdom_open(const char *uri, const char *name, struct virtdom **ret);
struct virtdom *virtdom_free(struct virtdom *d);
/* Whether the connection still works (a call failed with -ECONNRESET). */
int virtdom_alive(struct virtdom *d);

/* libvirt's message for the last failure of a virtdom call in this thread,
 * or "" (valid until the next call). */
const char *virtdom_last_error(void);

/* 1 when the domain runs (or is paused), 0 when it is shut off. */
int virtdom_active(struct virtdom *d);
/* The domain's XML and what it says: the live definition, or with
 * inactive the persistent one. */
int virtdom_info(struct virtdom *d, int inactive, struct virtdom_info *ret);
/* A disk's virtual size in bytes, by its target. */
int virtdom_disk_capacity(struct virtdom *d, const char *target, uint64_t *ret);

/* The names of the domain's checkpoints (malloc'd array of malloc'd
 * strings; free with virtdom_strv_free). */
int virtdom_checkpoints(struct virtdom *d, char ***ret, size_t *ret_n);
void virtdom_strv_free(char **v, size_t n);
/* Deletes one checkpoint (its bitmaps; the others keep theirs). */
int virtdom_checkpoint_delete(struct virtdom *d, const char *name);

/* virDomainBackupBegin: the backup and, with checkpoint_xml, a checkpoint
 * created at the same instant. */
int virtdom_backup_begin(struct virtdom *d, const char *backup_xml, const char *checkpoint_xml);
/* The XML of the backup job that runs, -ENOENT when none does. */
int virtdom_backup_xml(struct virtdom *d, char **ret);
/* Ends the domain's job (a pull-mode backup: libvirt removes the scratch
 * files it made); -ENOENT when none runs. */
int virtdom_abort_job(struct virtdom *d);

/* The guest's file systems, through its guest agent: returns how many were
 * frozen or thawed. */
int virtdom_fs_freeze(struct virtdom *d);
int virtdom_fs_thaw(struct virtdom *d);

/* The metadata element in namespace uri (an XML text, which libvirt
 * hands back without the namespace's prefix), -ENOENT if none. */
int virtdom_metadata(struct virtdom *d, const char *uri, char **ret);
/* The text of the child element named name (local name) of the root of
 * xml, such as a metadata element; -ENOENT without one, -EBADMSG for what
 * is no XML. */
int virtdom_xml_child_text(const char *xml, const char *name, char **ret);
/* Stops the domain if it runs (power cut) and undefines it, with its
 * checkpoint metadata. */
int virtdom_destroy_undefine(struct virtdom *d);
