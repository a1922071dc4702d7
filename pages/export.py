"""Export step: download the kept list and the manifest that reproduces it."""

import json

import streamlit as st

from pruning_core.selection import SelectionRecipe, run_recipe
from ui import state

st.title("Export")
dataset = state.require_dataset()
table = state.require_scores(dataset)
recipe = st.session_state.get(state.RECIPE) or SelectionRecipe(keep=0.8, strategy="easiest", balance=True)
mask = run_recipe(table.frame, table.infos, recipe)
kept = table.frame[mask]
st.write(f"**{len(kept):,}** of {len(table.frame):,} samples kept by `{recipe.strategy}` at keep={recipe.keep}.")
st.download_button("Download kept list (CSV)", kept.to_csv(index=False).encode(), file_name="kept.csv",
                   mime="text/csv", type="primary")
recipe_json = json.dumps({"dataset_fingerprint": dataset.fingerprint, "selection": recipe.as_dict()}, indent=2)
st.download_button("Download selection recipe (JSON)", recipe_json.encode(), file_name="selection.json",
                   mime="application/json")
st.dataframe(kept.head(500), hide_index=True, use_container_width=True)
