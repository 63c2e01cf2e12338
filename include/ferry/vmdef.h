/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VM definitions as ferryfs shows them: MOUNT/<vm>/vm.conf, the VM's
 * settings and target resources, and for failover clones the libvirt domain
 * XML and the qemu command line MOUNT/<vm>/failovers/<name>/domain.xml and
 * qemu.args, built from the VM's description in the catalog and the clone's
 * image paths. Pure functions: no I/O, no globals, thread-safe.
 *
 * Every string is checked before use: control characters and invalid UTF-8
 * are refused (-EINVAL), because they could break the one-line qemu.args or
 * make the XML ill-formed; the rest is escaped for XML (&<>'"), for qemu's
 * option parser (',' doubled inside values) and for the shell (single
 * quotes), so hostile names cannot inject elements, options or commands.
 *
 * domain.xml: a <domain type='kvm'> (type 'qemu' when the accelerator list
 * starts with tcg) with name, uuid, memory, vcpus, machine type, SeaBIOS,
 * raw virtio disks vda, vdb, ... in source order with boot order 1, 2, ...
 * (each with a <seclabel model='dac' relabel='no'/> on its source: libvirt
 * leaves the owner of a clone image alone),
 * NICs (virtio unless the source had another model) of type 'network' on
 * the given network with the source MACs,
 * a serial console on a pty, and <metadata> in the namespace
 * FERRY_VMDEF_XMLNS: <ferry:failover> with the kind, source VM, recovery
 * point, resource group, availability set, subnet and each NIC's address.
 *
 * qemu.args: ONE line (and a trailing newline) of shell words: the
 * emulator, then its arguments, each single-quoted when it holds anything
 * but [A-Za-z0-9_./:=,@+%-]. Run it with `sh qemu.args`, or append
 * arguments: sh -c "$(cat qemu.args) -no-reboot". The VM runs headless
 * (-display none) with its serial console multiplexed with the qemu monitor
 * on stdio (-serial mon:stdio; Ctrl-A c switches, Ctrl-A x quits); it starts
 * from -nodefaults, so every device in it is listed. NICs use qemu's user
 * network: restricted (no route to the host or outside) for test failovers;
 * where the NIC's address allows, its subnet and DHCP start follow the
 * address, so a DHCP guest gets its static address back. With
 * FERRY_VMDEF_NET_BRIDGE they attach to the host bridge named as the NIC's
 * network instead (qemu-bridge-helper must allow it).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ferry/catalog.h"

/* The XML namespace of Ferry's <metadata> element in domain.xml. */
#define FERRY_VMDEF_XMLNS "urn:ferry:vm:1"

enum ferry_vmdef_kind {
	FERRY_VMDEF_TEST_FAILOVER, /* isolated test network */
	FERRY_VMDEF_FAILOVER,      /* the target network */
};

enum ferry_vmdef_net {
	FERRY_VMDEF_NET_USER,   /* qemu user network (restricted for test failovers) */
	FERRY_VMDEF_NET_BRIDGE, /* -netdev bridge,br=<nic network> */
};

struct ferry_vmdef_disk {
	const char *name; /* the disk's name in the VM, e.g. "os" (metadata only) */
	const char *path; /* absolute path of the raw image */
};

struct ferry_vmdef_nic {
	const char *mac;     /* "52:54:00:12:34:56"; required */
	const char *address; /* "10.0.0.5/24", "10.0.0.5" or NULL: metadata and DHCP start */
	const char *network; /* target (or test) network; required */
	const char *model;   /* libvirt model / qemu device: NULL or "virtio" (virtio-net-pci),
				"e1000", "rtl8139", ... ([A-Za-z0-9._-], passed on as is) */
};

struct ferry_vmdef {
	const char *name;     /* the target VM's name, e.g. "<vm>-<failover name>" */
	uint8_t uuid[16];     /* see ferry_vmdef_uuid_from_seed() */
	unsigned cpus;        /* >= 1 */
	uint64_t memory_mib;  /* >= 1 */
	const char *machine;  /* NULL: "pc" (i440FX, SeaBIOS) */
	const char *accel;    /* colon-separated, tried in order; NULL: "kvm:tcg" */
	const char *cache;    /* none|writeback|writethrough|directsync|unsafe; NULL: "none" */
	const char *emulator; /* NULL: "qemu-system-x86_64" (looked up in PATH) */
	const struct ferry_vmdef_disk *disks; /* in source order; the first boots */
	size_t n_disks;                       /* 1..FERRY_VMDEF_MAX_DISKS */
	const struct ferry_vmdef_nic *nics;
	size_t n_nics; /* 0..FERRY_VMDEF_MAX_NICS */
	enum ferry_vmdef_net net;
	enum ferry_vmdef_kind kind;
	/* Metadata only; NULL or "" leaves the element out. */
	const char *source_vm;
	const char *recovery_point;
	const char *resource_group;
	const char *availability_set;
	const char *subnet; /* target subnet CIDR */
};

#define FERRY_VMDEF_MAX_DISKS 64
#define FERRY_VMDEF_MAX_NICS 32

/*
 * Both return a new NUL-terminated string (free() it): the whole file's
 * content. -EINVAL for a definition that is incomplete, out of range, or
 * holds a string that cannot be represented safely (see above).
 */
int ferry_vmdef_domain_xml(const struct ferry_vmdef *d, char **ret);
int ferry_vmdef_qemu_args(const struct ferry_vmdef *d, char **ret);

/*
 * A stable UUID from a seed (e.g. "<vault uuid>/<vm>/<failover name>"):
 * SHA-256 of the seed shaped as an RFC 9562 version 8 UUID, so the same
 * clone keeps its UUID across remounts and two clones never share one.
 */
void ferry_vmdef_uuid_from_seed(const void *seed, size_t len, uint8_t ret[16]);
/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" and a NUL: 37 bytes. */
void ferry_vmdef_uuid_format(const uint8_t uuid[16], char ret[37]);

/*
 * The static address rule of failover (IPv4): given a NIC's source address
 * ("a.b.c.d/p" or "a.b.c.d"), the target subnet's CIDR (NULL, "" or a
 * name without '/' when unknown) and the addresses already in use there
 * (with or without prefix), returns a new "a.b.c.d/p" string:
 *   - subnet unknown: the source address unchanged (any family);
 *   - source address inside the subnet, not its network, gateway (.1 of
 *     the subnet: network + 1) or broadcast address, and not in use: kept,
 *     with the subnet's prefix;
 *   - otherwise the lowest free host address of the subnet (network + 2
 *     upwards, broadcast excluded), with the subnet's prefix.
 * -EINVAL for unparsable input, -EAFNOSUPPORT for a non-IPv4 subnet,
 * -ENOSPC when the subnet has no free host address.
 */
int ferry_vmdef_pick_address(const char *source, const char *subnet, const char *const *used,
			     size_t n_used, char **ret);

/* ---- NIC specifications ---- */

#define FERRY_VMDEF_NIC_MODEL_MAX 16
/* The longest canonical NIC specification and its NUL. */
#define FERRY_VMDEF_NIC_SPEC_SIZE 72

struct ferry_vmdef_nic_spec {
	char mac[18]; /* lower case: "52:54:00:12:34:56" */
	char ip[19];  /* "10.0.0.5/24" as inet_ntop(3) writes it, or "" for none */
	char model[FERRY_VMDEF_NIC_MODEL_MAX + 1]; /* "virtio" unless given */
};

/*
 * A NIC as `ferry enable-replication --nic` takes it and the catalog's
 * nic.N resource keeps it: comma-separated KEY=VALUE items (empty items
 * are skipped), each key at most once, of
 *   mac=XX:XX:XX:XX:XX:XX  required: six pairs of hex digits of either
 *                          case and a unicast address (the first octet's
 *                          low bit clear: libvirt refuses multicast);
 *   ip=A.B.C.D/P           optional: an IPv4 address as inet_pton(3)
 *                          takes it (dotted quad, no leading zeros) and a
 *                          prefix of 0-32 (one or two digits); empty is
 *                          the same as absent;
 *   model=M                optional: 1-16 of [A-Za-z0-9._-], not starting
 *                          with '.' or '-'; default "virtio".
 * One parser for both sides, with the stricter of the rules the CLI and
 * the failover renderer each used to have: an unknown key, a key given
 * twice, an IPv6 or prefix-less address, a multicast MAC or a model the
 * CLI would not take is -EINVAL when a resource is read too, so that a
 * failover never boots a NIC other than the one that was asked for. *ret
 * is written only on success.
 */
int ferry_vmdef_nic_parse(const char *spec, struct ferry_vmdef_nic_spec *ret);
/*
 * The canonical form, which enable-replication stores:
 * "mac=<lower case>[,ip=A.B.C.D/P],model=M". For a spec from
 * ferry_vmdef_nic_parse(), parsing the result gives the same spec back and
 * it fits in FERRY_VMDEF_NIC_SPEC_SIZE bytes; -ENOBUFS when it does not fit
 * in size.
 */
int ferry_vmdef_nic_format(const struct ferry_vmdef_nic_spec *n, char *buf, size_t size);

/* ---- from the catalog: what ferryfs shows ---- */

/*
 * One of a VM's target resources as the catalog keeps them (`ferry
 * enable-replication` writes them): "vm-cpus" and "vm-memory-mib" (decimal;
 * unset, zero or garbage: 1 CPU and 1024 MiB; at most 4096 CPUs),
 * "target-group", "availability-set", and "nic.0", "nic.1", ... (no gaps)
 * each "mac=52:54:00:12:34:56[,ip=10.0.0.5/24][,model=virtio]" as
 * ferry_vmdef_nic_parse() reads it. The strings belong to the caller.
 */
struct ferry_vmdef_resource {
	const char *key;
	const char *value;
};

/*
 * vm.conf: a comment line, then `key = value` lines: name, state, error
 * (when set), cache-url, the intervals and retention, created, applied-seq,
 * live-time (once a marker was applied), disk.<idx>.name/size/source for
 * each disk, then every resource in the order given. Strings go in as they
 * are. Returns a new NUL-terminated string (free() it) and its length;
 * -EINVAL without a VM (or with a count but no array), -ENOMEM.
 */
int ferry_vmdef_conf(const struct ferry_vm *vm, const struct ferry_disk *disks, size_t n_disks,
		     const struct ferry_vmdef_resource *res, size_t n_res, char **ret,
		     size_t *ret_len);

/* A failover clone of a VM, as ferryfs mounts it. */
struct ferry_vmdef_failover {
	const struct ferry_vm *vm;
	const struct ferry_vmdef_resource *res; /* the VM's target resources */
	size_t n_res;
	const struct ferry_failover *failover;
	const struct ferry_clone_disk *disks; /* in source order */
	size_t n_disks;
	const char *mount;    /* absolute path of the mount: images are at
				 <mount>/<vm>/failovers/<failover>/<disk>.img */
	const char *vault_id; /* with VM, failover name and id, seeds the UUID */
};

/*
 * domain.xml and qemu.args of a failover clone: a struct ferry_vmdef named
 * "<vm>-<failover>" with CPUs, memory, resource group, availability set and
 * NICs from the resources (each NIC on the failover's network, read by
 * ferry_vmdef_nic_parse(), its static address moved into the failover's
 * subnet by ferry_vmdef_pick_address(), or kept as it is where that fails), the failover's accelerators, kind,
 * recovery point and subnet, the clone images (at most
 * FERRY_VMDEF_MAX_DISKS) and the UUID of
 * ferry_vmdef_uuid_from_seed("<vault id>/<vm>/<failover>/<failover id>"),
 * rendered by ferry_vmdef_domain_xml() or ferry_vmdef_qemu_args(). Returns
 * a new string (free() it); -EINVAL for a missing field, a malformed NIC
 * resource or what those refuse, -ENAMETOOLONG for an image path of 1 KiB
 * or more, -ENOMEM.
 */
int ferry_vmdef_failover_domain_xml(const struct ferry_vmdef_failover *f, char **ret);
int ferry_vmdef_failover_qemu_args(const struct ferry_vmdef_failover *f, char **ret);

/* Writes s to f escaped for XML text or an attribute value between either
 * quotes (&<>'"): the one escaper of domain.xml, shared with whoever else
 * writes libvirt XML (the libvirt tracker). s is not checked here. */
void ferry_vmdef_xml_escape(FILE *f, const char *s);
