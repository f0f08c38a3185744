"""What every part runs on: jobs with progress and cancel, devices and GPU memory, staying offline, where
the program may write, secrets kept out of records, errors in words, resources and time formats, cost estimates."""
