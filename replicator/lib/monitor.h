/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry-replicator's watch over its vault, after every pass: each VM is
 * observed (observe.h) and judged (health.h); a change of its health is
 * recorded in the catalog, as the VM's "health" resource and an event that
 * `ferry show` lists; and, with a metrics file, every figure is written
 * there for Prometheus (metrics.h; the names are listed in
 * ferry-replicator(8), METRICS). The replicator is the vault's writer, so
 * health changes are recorded here and not by `ferry status`, which only
 * reads.
 */
#pragma once

#include <stdint.h>

#include "ferry/vault.h"
#include "replicate.h"

struct monitor;

/* metrics_path NULL: health only, no metrics file. */
int monitor_new(const char *metrics_path, struct monitor **ret);
struct monitor *monitor_free(struct monitor *m);

/* The counters of a VM's passes, for the metrics: the caller passes them
 * to replicate_vm_counted (never NULL; zero for a VM seen first). */
struct replicate_stats *monitor_vm_stats(struct monitor *m, const char *vm);

/*
 * After a pass, with the vault's writer lock held and no transaction open:
 * observes and judges every VM at now_ns, records the health changes, and
 * writes the metrics file. Problems are logged and counted, never fatal:
 * returns 0, or -errno when the VMs could not even be listed.
 */
int monitor_pass(struct monitor *m, struct ferry_vault *v, int64_t now_ns);
