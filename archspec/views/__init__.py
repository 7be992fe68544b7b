"""views: what a person or a script reads, computed from Graphs and specs: the HTML report
(`report`, `diagram`, `charts`), the diff of two networks (`diff`), the scaling family
table and coefficient search (`sweeps`). No TensorFlow, except the optional measured
counts of a built model in the report."""
