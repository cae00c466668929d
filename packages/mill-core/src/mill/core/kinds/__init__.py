"""Mill's own task kinds, registered under the ``mill.task_kinds`` entry-point group like anyone else's."""
