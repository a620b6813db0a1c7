/* slot.h -- Redis Cluster hash slots, no I/O (slot.c).
 *
 * Which of the 16384 slots a key lives in, and where the key is in each
 * command rrpc sends: all a cluster map (cluster_map.h) needs to route a
 * command, and what unit tests pin against CLUSTER KEYSLOT.
 */
#ifndef RRPC_SLOT_H
#define RRPC_SLOT_H

#include <stddef.h>

#define RRPC__CLUSTER_SLOTS 16384

/* The hash slot of KEY[0..len): CRC16 of the key, or of its {hash tag}. */
unsigned rrpc__key_slot(const char *key, size_t len);
/* The index in ARGV of the key that decides where a command goes, or -1
 * for a command without a key (it may go to any node). */
int rrpc__command_key_index(int argc, const char **argv);

#endif /* RRPC_SLOT_H */
