//! Running schedules one after another.

use crate::validate::{bisect_right, ordered};
use crate::{Schedule, ScheduleError, ScheduleState, ScheduleValue};

/// Schedules run one after another, switching at milestones.
///
/// With milestones `m_1 <= m_2 <= ...`, step `k` is handed to child `i` = the number of
/// milestones `<= k`, at that child's local step `k - m_i` (`m_0 = 0`): each child starts from
/// its own step 0 when its turn comes. This is both PyTorch's `SequentialLR` (construct with
/// [`Sequential::new`]) and optax's `join_schedules` (construct with [`Sequential::join`]); the
/// two agree step for step. Only the active child is stepped; metrics ([`Schedule::observe`])
/// go to the active child, so a [`crate::ReduceOnPlateau`] can follow a warmup (PyTorch's
/// `SequentialLR` refuses one; here it simply receives the metrics while it is active).
///
/// Errors: no children, `milestones.len() != children.len() - 1`, milestones that decrease.
pub struct Sequential {
    children: Vec<Box<dyn Schedule>>,
    milestones: Vec<u64>,
    step: u64,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&str> = self.children.iter().map(|c| c.kind()).collect();
        f.debug_struct("Sequential")
            .field("children", &kinds)
            .field("milestones", &self.milestones)
            .field("step", &self.step)
            .finish()
    }
}

impl Sequential {
    /// PyTorch `SequentialLR(schedulers, milestones)`. The children are reset to step 0.
    pub fn new(
        children: Vec<Box<dyn Schedule>>,
        milestones: Vec<u64>,
    ) -> Result<Self, ScheduleError> {
        if children.is_empty() {
            return Err(ScheduleError::NoSchedules);
        }
        if milestones.len() + 1 != children.len() {
            return Err(ScheduleError::MilestoneCount {
                children: children.len(),
                milestones: milestones.len(),
            });
        }
        ordered(&milestones)?;
        let mut s = Self {
            children,
            milestones,
            step: 0,
        };
        s.reset();
        Ok(s)
    }

    /// optax `join_schedules(schedules, boundaries)`: the same semantics as [`Sequential::new`].
    pub fn join(
        children: Vec<Box<dyn Schedule>>,
        boundaries: Vec<u64>,
    ) -> Result<Self, ScheduleError> {
        Self::new(children, boundaries)
    }

    fn active(&self) -> usize {
        bisect_right(&self.milestones, self.step)
    }
}

impl Schedule for Sequential {
    fn kind(&self) -> &'static str {
        "sequential"
    }

    fn step(&self) -> u64 {
        self.step
    }

    fn peek(&self) -> Result<ScheduleValue, ScheduleError> {
        match self.children.get(self.active()) {
            Some(child) => child.peek(),
            None => Err(ScheduleError::NoSchedules),
        }
    }

    fn advance(&mut self) -> Result<(), ScheduleError> {
        let next = self
            .step
            .checked_add(1)
            .ok_or(ScheduleError::StepOverflow)?;
        let i = self.active();
        if let Some(child) = self.children.get_mut(i) {
            child.advance()?;
        }
        self.step = next;
        Ok(())
    }

    fn observe(&mut self, metric: f64) -> Result<(), ScheduleError> {
        let i = self.active();
        match self.children.get_mut(i) {
            Some(child) => child.observe(metric),
            None => Err(ScheduleError::NoSchedules),
        }
    }

    fn reset(&mut self) {
        self.step = 0;
        for c in &mut self.children {
            c.reset();
        }
    }

    fn state(&self) -> ScheduleState {
        let mut s = ScheduleState::at_step(self.kind(), self.step);
        s.children = self.children.iter().map(|c| c.state()).collect();
        s
    }

    fn load_state(&mut self, state: &ScheduleState) -> Result<(), ScheduleError> {
        state.expect_kind(self.kind())?;
        if state.children.len() != self.children.len() {
            return Err(ScheduleError::StateMismatch {
                reason: format!(
                    "state has {} children, schedule has {}",
                    state.children.len(),
                    self.children.len()
                ),
            });
        }
        // Validate every child before changing any, so a failed load leaves the schedule intact.
        let backup: Vec<ScheduleState> = self.children.iter().map(|c| c.state()).collect();
        for (i, (child, s)) in self.children.iter_mut().zip(&state.children).enumerate() {
            if let Err(e) = child.load_state(s) {
                for (c, b) in self.children.iter_mut().zip(&backup).take(i) {
                    // Restoring a state this child itself produced cannot fail.
                    let _ = c.load_state(b);
                }
                return Err(e);
            }
        }
        self.step = state.step;
        Ok(())
    }
}
