"""Files: safe image reading, the models' input checks and atomic writes."""
