"""Bulk jobs on Redis Streams: submit large id lists, work them at bulk priority everywhere."""
