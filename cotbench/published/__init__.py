"""The study's released generations as cotbench run directories: ``importer`` reads them (hub or file
I/O, re-scored with our extractors), ``cli`` is the ``published`` sub-command."""
