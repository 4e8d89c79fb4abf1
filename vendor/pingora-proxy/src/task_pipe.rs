// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The bounded one-sender, one-receiver pipe between the two halves of one HTTP/1 proxied
//! request.
//!
//! It has the subset of `tokio::sync::mpsc`'s API that `proxy_h1` uses, with the same
//! semantics (reserve a slot, send through the permit; `recv` yields `None` once the sender is
//! gone and the queue is drained; sending fails once the receiver is gone). It exists because
//! the two pipes are made for every request: tokio's channel allocates a 32-slot block and a
//! cache-padded, many-sender channel state for each, and pays for its multi-producer protocol
//! on every message, where both ends of this pipe live in one task (`try_join!`). Here a pipe is
//! one allocation holding a `TASK_BUFFER_SIZE` ring under an uncontended lock.

use std::fmt;
use std::future::{poll_fn, Future};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use crate::TASK_BUFFER_SIZE as CAP;

/// Make a pipe holding at most `TASK_BUFFER_SIZE` values (sent or reserved).
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(State {
        ring: [const { None }; CAP],
        head: 0,
        len: 0,
        reserved: 0,
        sender_gone: false,
        receiver_gone: false,
        recv_waker: None,
        send_waker: None,
    }));
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct State<T> {
    ring: [Option<T>; CAP],
    head: usize,
    len: usize,
    reserved: usize,
    sender_gone: bool,
    receiver_gone: bool,
    recv_waker: Option<Waker>,
    send_waker: Option<Waker>,
}

impl<T> State<T> {
    fn has_room(&self) -> bool {
        self.len + self.reserved < CAP
    }

    fn push(&mut self, value: T) {
        let tail = (self.head + self.len) % CAP;
        self.ring[tail] = Some(value);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let value = self.ring[self.head].take();
        self.head = (self.head + 1) % CAP;
        self.len -= 1;
        value
    }
}

fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(kept) if kept.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

fn lock<T>(shared: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // Nothing panics while the lock is held except allocation failure; the state stays
    // consistent either way.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sending end.
pub(crate) struct Sender<T> {
    shared: Arc<Mutex<State<T>>>,
}

/// A slot reserved in the pipe: sending through it cannot fail or wait.
pub(crate) struct Permit<'a, T> {
    sender: &'a Sender<T>,
}

/// The receiving end.
pub(crate) struct Receiver<T> {
    shared: Arc<Mutex<State<T>>>,
}

/// The receiver is gone; the value was not sent.
pub(crate) struct SendError<T>(pub T);

/// Why `try_reserve` gave no slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError {
    Full,
    Closed,
}

impl<T> Sender<T> {
    /// Reserve a slot now, or say why not.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError> {
        let mut state = lock(&self.shared);
        if state.receiver_gone {
            return Err(TrySendError::Closed);
        }
        if !state.has_room() {
            return Err(TrySendError::Full);
        }
        state.reserved += 1;
        Ok(Permit { sender: self })
    }

    /// Wait for a slot; fails once the receiver is gone. Cancel safe: a dropped wait holds
    /// no slot.
    pub(crate) fn reserve(&self) -> impl Future<Output = Result<Permit<'_, T>, SendError<()>>> {
        poll_fn(move |cx| {
            let mut state = lock(&self.shared);
            if state.receiver_gone {
                return Poll::Ready(Err(SendError(())));
            }
            if state.has_room() {
                state.reserved += 1;
                return Poll::Ready(Ok(Permit { sender: self }));
            }
            register(&mut state.send_waker, cx.waker());
            Poll::Pending
        })
    }

    /// Wait for a slot and send `value` through it.
    pub(crate) async fn send(&self, value: T) -> Result<(), SendError<T>> {
        match self.reserve().await {
            Ok(permit) => {
                permit.send(value);
                Ok(())
            }
            Err(_) => Err(SendError(value)),
        }
    }

    /// Whether the receiver is gone.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.shared).receiver_gone
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.shared);
            state.sender_gone = true;
            state.recv_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Permit<'_, T> {
    /// Send `value` in the reserved slot. A receiver already gone drops it, as tokio's does
    /// when the channel goes.
    pub(crate) fn send(self, value: T) {
        let waker = {
            let mut state = lock(&self.sender.shared);
            state.reserved -= 1;
            if state.receiver_gone {
                None
            } else {
                state.push(value);
                state.recv_waker.take()
            }
        };
        // The slot is handed to the value, not given back.
        std::mem::forget(self);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.sender.shared);
            state.reserved -= 1;
            state.send_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next value; `None` once the sender is gone and every sent value was received.
    /// Cancel safe.
    pub(crate) fn recv(&mut self) -> impl Future<Output = Option<T>> + '_ {
        poll_fn(move |cx| {
            let (value, waker) = {
                let mut state = lock(&self.shared);
                match state.pop() {
                    Some(value) => (Some(value), state.send_waker.take()),
                    // A permit borrows the sender, so a gone sender holds no reserved slot.
                    None if state.sender_gone => return Poll::Ready(None),
                    None => {
                        register(&mut state.recv_waker, cx.waker());
                        return Poll::Pending;
                    }
                }
            };
            if let Some(waker) = waker {
                waker.wake();
            }
            Poll::Ready(value)
        })
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (unread, waker) = {
            let mut state = lock(&self.shared);
            state.receiver_gone = true;
            let unread: Vec<T> = std::iter::from_fn(|| state.pop()).collect();
            (unread, state.send_waker.take())
        };
        // Values are dropped outside the lock: their destructors may do anything.
        drop(unread);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError { .. }")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task pipe closed")
    }
}

impl<T> std::error::Error for SendError<T> {}

impl fmt::Display for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full => "task pipe full",
            TrySendError::Closed => "task pipe closed",
        })
    }
}

impl std::error::Error for TrySendError {}

impl<T> fmt::Debug for Permit<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

// The tests run from credproxy's `tests/task_pipe.rs`, which compiles this file on its own
// (the vendored crate's own tests lack their dev-dependencies): they use std and tokio only.
#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::task::Context;

    /// Poll once: `Some` if ready.
    fn now<F: Future>(f: F) -> Option<F::Output> {
        match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[test]
    fn values_arrive_in_order_and_none_follows_the_sender() {
        let (tx, mut rx) = channel::<usize>();
        for i in 0..CAP {
            tx.try_reserve().unwrap().send(i);
        }
        assert_eq!(tx.try_reserve().unwrap_err(), TrySendError::Full);
        assert!(now(tx.reserve()).is_none(), "full: pending");
        for i in 0..CAP {
            assert_eq!(now(rx.recv()), Some(Some(i)));
        }
        assert!(now(rx.recv()).is_none(), "empty: pending");
        drop(tx);
        assert_eq!(now(rx.recv()), Some(None));
    }

    #[test]
    fn a_dropped_permit_gives_its_slot_back() {
        let (tx, _rx) = channel::<u32>();
        let permits: Vec<_> = (0..CAP).map(|_| tx.try_reserve().unwrap()).collect();
        assert!(now(tx.reserve()).is_none(), "full: pending");
        drop(permits);
        assert!(now(tx.reserve()).unwrap().is_ok());
    }

    #[test]
    fn the_ring_wraps() {
        let (tx, mut rx) = channel::<usize>();
        for i in 0..CAP * 3 {
            tx.try_reserve().unwrap().send(i);
            tx.try_reserve().unwrap().send(i + 100);
            assert_eq!(now(rx.recv()), Some(Some(i)));
            assert_eq!(now(rx.recv()), Some(Some(i + 100)));
        }
    }

    #[test]
    fn a_gone_receiver_fails_sends_and_drops_what_was_queued() {
        let value = Arc::new(());
        let (tx, rx) = channel::<Arc<()>>();
        tx.try_reserve().unwrap().send(value.clone());
        let permit = tx.try_reserve().unwrap();
        drop(rx);
        assert_eq!(
            Arc::strong_count(&value),
            1,
            "queued value dropped with the receiver"
        );
        assert!(tx.is_closed());
        permit.send(value.clone());
        assert_eq!(Arc::strong_count(&value), 1);
        let SendError(back) = now(tx.send(value.clone())).unwrap().unwrap_err();
        assert!(
            Arc::ptr_eq(&back, &value),
            "the unsent value is handed back"
        );
        assert_eq!(tx.try_reserve().unwrap_err(), TrySendError::Closed);
        assert!(now(tx.reserve()).unwrap().is_err());
    }

    #[tokio::test]
    async fn waiting_ends_wake_across_tasks() {
        let (tx, mut rx) = channel::<usize>();
        let consumer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(v);
            }
            got
        });
        for i in 0..100 {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        assert_eq!(consumer.await.unwrap(), (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_full_sender_wakes_when_the_receiver_goes() {
        let (tx, rx) = channel::<usize>();
        for i in 0..CAP {
            tx.send(i).await.unwrap();
        }
        let sender = tokio::spawn(async move { tx.send(99).await.is_err() });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(sender.await.unwrap());
    }
}
