// The per-call deadline is core's, shared with the other adapters.
export { withDeadline } from '@cluster/core';
