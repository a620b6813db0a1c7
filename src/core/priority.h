/* priority.h -- call priorities (PROTOCOL.md section 7, "Priorities"):
 * the request member's values and the push scripts, in one place
 * (priority.c); no I/O.  The lists' names are keys.h's. */
#ifndef RRPC_PRIORITY_H
#define RRPC_PRIORITY_H

#include <stddef.h>

/* The member's value of PRIORITY (RRPC_PRIORITY_*): "high", "normal" or
 * "low"; NULL for any other number. */
const char *rrpc__priority_name(int priority);

/* Nonzero if a request's member "priority" of text S (LEN bytes) is one
 * of the three names. */
int rrpc__priority_known(const char *s, size_t len);

/* Pushes high and low requests.  KEYS: L, {L}:high, {L}:low.  ARGV: one
 * or more request texts, then "high" or "low".  The spec's script
 * (ARGV = [text, priority]) with room for a group of texts: a priority
 * list is used only while there is a backlog, so a call that finds none
 * goes straight onto L, where an idle worker -- a reliable one blocked in
 * BLMOVE on L too -- takes it at once.  Returns RPUSH's length. */
extern const char rrpc__priority_push_script[];

/* Pushes with max_queue.  KEYS: L, {L}:high, {L}:low.  ARGV: text,
 * max_queue, then "high" or "low" (absent: normal).  -1 if the three
 * lists together hold max_queue requests already; else places the text
 * as rrpc__priority_push_script does (normal: L) and returns RPUSH's
 * length. */
extern const char rrpc__max_queue_push_script[];

#endif
