"""lmms-eval task folders (--include_path zoo/lmms/tasks): each holds a task YAML and the functions it names."""
