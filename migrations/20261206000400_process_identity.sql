-- Issue 24: a dead run on this host is dead at once. A run's row names its process beyond host
-- and pid (neither is unique across containers and reboots): the kernel's boot id, the pid
-- namespace and the process's start time (clock ticks since boot, /proc/PID/stat field 22).
-- A repair on the same kernel and in the same pid namespace that finds no process with that
-- pid and start time declares the run dead without waiting for its lease. NULL (rows from
-- before, or a system without /proc): the lease decides, as before.
ALTER TABLE receipts.export_runs
    ADD COLUMN boot_id text,
    ADD COLUMN pid_namespace bigint,
    ADD COLUMN process_start bigint;
