"""The attribution methods, their measured defaults and cost, and the attacks on explanations."""
