"""grokscope: study grokking and generalization circuits in transformers on two-hop compositional reasoning.

Pipeline (each arrow is a directory with a documented schema, see DESIGN §2):
``data build -> train -> analyze -> transfer -> report``; ``study`` runs them all.
"""

__version__ = "0.1.0"
