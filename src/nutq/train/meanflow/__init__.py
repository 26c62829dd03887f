"""MeanFlow distillation of the S3Gen flow decoder: a 2- and 1-step student from the 10-step teacher.

inputs (flow inputs as inference builds them), teacher (the guided field and its path), student
(init and export), objective (interval loss and pair sampling), cache (teacher paths on disk),
trainer (`nutq train meanflow`), evaluate (`nutq eval meanflow`).
"""
