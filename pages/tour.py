"""Walk-through: the story of the demo workspace from preference data to compared policies, in
five steps with the real numbers, for stakeholders (the presentation mode opens here)."""

import pandas as pd
import streamlit as st

from morm_explorer.errors import MormError
from morm_explorer.evaluation.compare import load_comparison
from morm_explorer.evaluation.report import comparison_figures
from morm_explorer.evaluation.stats import difference_sentence
from morm_explorer.ui.text import plain
from morm_explorer.walkthrough import walkthrough
from pages.common import workspace

ws = workspace()
st.title("Walk-through")
st.caption("Why one reward per objective matters, in five steps on this workspace's demo. "
           "Every number below is computed from what the workspace holds.")


@st.cache_data(ttl=30, show_spinner="Reading the workspace ...")
def steps(root: str):
    return walkthrough(ws)


data, reward, explore, policies, compare = steps(str(ws.root))
links = ["pages/data.py", "pages/reward_models.py", "pages/explore.py", "pages/finetune.py",
         "pages/compare.py"]


def header(i: int, step) -> bool:
    st.subheader(f"{i}. {step.title}")
    if not step.ready:
        st.info(f"Still being prepared: {plain(step.note)}.")
    return step.ready


if header(1, data):
    f = data.facts
    st.markdown(f"**{f['records']:,}** preference pairs over **{f['prompts']:,}** prompts, "
                f"labelled separately for {plain(', '.join(f['objectives']))}.")
    if f["conflict"] is not None:
        c = f["counts"]
        st.metric("Pairs where helpful and harmless prefer opposite answers",
                  f"{f['conflict']:.0%}", help="Of the pairs both objectives decide.")
        st.caption(f"Of the {c['decided']:,} pairs that both helpful and harmless decide (no "
                   f"tie on either): {c['decided'] / max(c['pairs'], 1):.0%} of all "
                   f"{c['pairs']:,} pairs. The others are labelled for one objective only "
                   "or tie on one.")
st.page_link(links[0], label="See the data", icon=":material/table_view:")

if header(2, reward):
    f = reward.facts
    rows = [{"objective": o, "its own head": a, "one overall reward model": f["single"].get(o)}
            for o, a in f["accuracy"].items()]
    st.markdown("One head per objective on a shared backbone, against a single reward model "
                "trained on the overall label: held-out accuracy per objective.")
    table = pd.DataFrame(rows)
    if table["one overall reward model"].isna().all():  # trained without the baseline
        table = table.drop(columns="one overall reward model")
        st.caption("This reward model was trained without the single overall baseline.")
    st.dataframe(table, hide_index=True, width="stretch", key="tour_acc",
                 column_config={c: st.column_config.NumberColumn(format="percent")
                                for c in ("its own head", "one overall reward model")})
    worst = min(rows, key=lambda r: (r["one overall reward model"] or 1) - r["its own head"])
    if worst["one overall reward model"] is not None:
        st.markdown(f"A single reward model ranks **{plain(worst['objective'])}** pairs right "
                    f"{worst['one overall reward model']:.0%} of the time; its own head "
                    f"{worst['its own head']:.0%}. That is the trade-off a single score hides.")
st.page_link(links[1], label="See the reward models", icon=":material/model_training:")

if header(3, explore):
    f = explore.facts
    st.markdown(f"Best-of-N on {f['prompts']} prompts: leaning on helpfulness or on "
                f"harmlessness changes the chosen answer on **{f['changed']}** of them.")
    means = pd.DataFrame(f["means"]).T
    means.index = [f"weights leaning {plain(lead)}" for lead in means.index]
    means.columns = [f"{plain(o)} score" for o in means.columns]
    st.dataframe(means, width="stretch", key="tour_means",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in means.columns})
    st.caption("Mean reward-model score, per objective, of the answers best-of-N picks under "
               "each leaning: the raw output of that objective's head (a logit, no unit; "
               "higher means better on that objective). Compare within a column, not across.")
    if f["example"]:
        st.caption("One prompt where the choice differs, and not because the harmless-leaning "
                   "pick is the shorter answer:")
        with st.container(border=True):
            st.text(f["example"]["prompt"])
            a, b = st.columns(2)
            a.caption("leaning helpful")
            a.text(f["example"]["helpful"])
            b.caption("leaning harmless")
            b.text(f["example"]["harmless"])
    elif f["changed"]:
        st.caption("Where the choice differs, the harmless-leaning pick is always the shorter "
                   "answer here: a length preference, so no example is shown.")
st.page_link(links[2], label="Move the weights yourself", icon=":material/tune:")

if header(4, policies):
    f = policies.facts
    st.markdown("Short PPO runs with different weights:")
    st.dataframe(pd.DataFrame(f["policies"]).astype(str), hide_index=True,
                 width="stretch", key="tour_policies")
    if f.get("differences"):
        a, b = f["pair"]
        st.markdown(f"Do they make different trade-offs? In the comparison "
                    f"{plain(f['comparison'])}, per objective (a difference is stated only "
                    "when its paired-bootstrap 95% interval over prompts excludes zero):")
        st.markdown("\n".join(f"- {plain(difference_sentence(a, b, row))}"
                              for row in f["differences"]))
    else:
        st.caption("Whether their trade-offs differ is measured by the comparison of step 5, "
                   "which is not there yet.")
st.page_link(links[3], label="Fine-tune", icon=":material/rocket_launch:")

if header(5, compare):
    try:
        cmp = load_comparison(ws, compare.facts["comparison"])
    except MormError as e:  # a damaged or replaced comparison: say so, go on
        st.warning(f"Cannot read the comparison: {plain(e)}")
    else:
        figs = comparison_figures(cmp)
        first = next(iter(figs.items()))
        st.markdown(f"{plain(', '.join(cmp.policies))} on the same prompts and seeds:")
        st.plotly_chart(first[1], key="tour_cmp")
st.page_link(links[4], label="Compare the policies", icon=":material/compare:")
