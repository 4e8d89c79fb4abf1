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
//!
//! Each end keeps one waker: at most one `reserve` may wait on a sender at a time (`Sender`
//! is not `Clone`; `proxy_h1` waits on it from one place), and `recv` takes `&mut self`. Waits
//! take no part in tokio's cooperative budget, unlike tokio's channel: every pass of
//! `proxy_h1`'s loops also does socket I/O, which does, and handles at most
//! `TASK_BUFFER_SIZE` queued tasks.

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
    use std::pin::{pin, Pin};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};

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

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker that counts its wake-ups.
    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn woken(c: &Count) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    fn poll_with<F: Future>(f: Pin<&mut F>, w: &Waker) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(w))
    }

    #[test]
    fn a_waiting_recv_is_woken_by_a_send_and_by_the_sender_going() {
        let (tx, mut rx) = channel::<u8>();
        // A poll with a no-op waker (as `now_or_never`) is replaced by the next real one.
        assert!(now(rx.recv()).is_none());
        let (c, w) = counter();
        assert!(poll_with(pin!(rx.recv()), &w).is_pending());
        tx.try_reserve().unwrap().send(1);
        assert_eq!(woken(&c), 1);
        let (c, w) = counter();
        assert_eq!(poll_with(pin!(rx.recv()), &w), Poll::Ready(Some(1)));
        assert!(poll_with(pin!(rx.recv()), &w).is_pending());
        drop(tx);
        assert_eq!(woken(&c), 1, "the sender going wakes a waiting recv");
    }

    #[test]
    fn a_waiting_reserve_is_woken_by_a_dropped_permit_a_recv_and_the_receiver_going() {
        let (tx, mut rx) = channel::<u8>();
        let permit = tx.try_reserve().unwrap();
        for _ in 1..CAP {
            tx.try_reserve().unwrap().send(0);
        }
        let (c, w) = counter();
        let mut wait = pin!(tx.reserve());
        assert!(poll_with(wait.as_mut(), &w).is_pending());
        drop(permit);
        assert_eq!(woken(&c), 1);
        let permit = match poll_with(wait.as_mut(), &w) {
            Poll::Ready(Ok(p)) => p,
            _ => panic!("a slot was free"),
        };

        let (c, w) = counter();
        let mut wait = pin!(tx.reserve());
        assert!(poll_with(wait.as_mut(), &w).is_pending());
        assert_eq!(now(rx.recv()), Some(Some(0)));
        assert_eq!(woken(&c), 1);
        drop(permit);

        let (c, w) = counter();
        let held = [tx.try_reserve().unwrap(), tx.try_reserve().unwrap()];
        let mut wait = pin!(tx.reserve());
        assert!(poll_with(wait.as_mut(), &w).is_pending());
        drop(rx);
        assert_eq!(woken(&c), 1);
        assert!(matches!(poll_with(wait.as_mut(), &w), Poll::Ready(Err(_))));
        drop(held);
    }

    #[test]
    fn queued_values_outlive_the_sender() {
        let (tx, mut rx) = channel::<u8>();
        tx.try_reserve().unwrap().send(1);
        tx.try_reserve().unwrap().send(2);
        drop(tx);
        assert_eq!(now(rx.recv()), Some(Some(1)));
        assert_eq!(now(rx.recv()), Some(Some(2)));
        assert_eq!(now(rx.recv()), Some(None));
        assert_eq!(now(rx.recv()), Some(None));
    }

    /// A value whose destructor checks that the pipe's lock is free.
    struct Reenter(Arc<Mutex<State<Reenter>>>, Arc<AtomicUsize>);

    impl Drop for Reenter {
        fn drop(&mut self) {
            assert!(self.0.try_lock().is_ok(), "dropped under the pipe's lock");
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn values_are_dropped_outside_the_lock() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = channel::<Reenter>();
        let shared = tx.shared.clone();
        let value = || Reenter(shared.clone(), dropped.clone());
        tx.try_reserve().unwrap().send(value());
        let permit = tx.try_reserve().unwrap();
        drop(rx);
        permit.send(value());
        drop(now(tx.send(value())));
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
    }

    /// `proxy_h1`'s shape: two halves in one task, each selecting over its pipes with the
    /// losing branches dropped every pass, draining with a no-op-waker poll.
    async fn half(tx: Sender<u32>, mut rx: Receiver<u32>, n: u32, yields: bool) -> Vec<u32> {
        let (mut next, mut got, mut rx_done) = (0, Vec::new(), false);
        let mut tx = Some(tx);
        while !rx_done || tx.is_some() {
            // The permit borrows the sender: it goes before the sender may.
            {
                let permit = tx.as_ref().map(Sender::try_reserve);
                let full = matches!(permit, Some(Err(TrySendError::Full)));
                tokio::select! {
                    _ = tokio::task::yield_now(), if yields && matches!(permit, Some(Ok(_))) => {
                        if let Some(Ok(p)) = permit {
                            p.send(next);
                            next += 1;
                        }
                    }
                    () = std::future::ready(()), if !yields && matches!(permit, Some(Ok(_))) => {
                        if let Some(Ok(p)) = permit {
                            p.send(next);
                            next += 1;
                        }
                    }
                    _ = async { tx.as_ref().map(|t| t.reserve()).unwrap().await.is_ok() }, if full => {}
                    v = rx.recv(), if !rx_done => match v {
                        Some(v) => {
                            got.push(v);
                            while let Some(more) = now(rx.recv()) {
                                match more {
                                    Some(v) => got.push(v),
                                    None => {
                                        rx_done = true;
                                        break;
                                    }
                                }
                            }
                        }
                        None => rx_done = true,
                    }
                }
            }
            if next == n {
                tx = None;
            }
        }
        got
    }

    #[tokio::test]
    async fn two_halves_in_one_task_like_proxy_h1() {
        for yields in [false, true] {
            let (t1, r1) = channel();
            let (t2, r2) = channel();
            let n = 5_000;
            let both = async { tokio::join!(half(t1, r2, n, yields), half(t2, r1, n, !yields)) };
            let (a, b) = tokio::time::timeout(std::time::Duration::from_secs(60), both)
                .await
                .expect("a lost wake-up: the halves hung");
            assert_eq!(a, (0..n).collect::<Vec<_>>());
            assert_eq!(b, (0..n).collect::<Vec<_>>());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn across_threads_with_cancelled_waits() {
        for round in 0..50u32 {
            let (tx, mut rx) = channel::<u32>();
            let n = 1_000;
            let producer = tokio::spawn(async move {
                let mut i = 0;
                while i < n {
                    tokio::select! {
                        r = tx.reserve() => {
                            r.unwrap().send(i);
                            i += 1;
                        }
                        _ = tokio::task::yield_now(), if i % 7 == round % 7 => {}
                    }
                }
            });
            let consumer = tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    tokio::select! {
                        m = rx.recv() => match m {
                            Some(x) => got.push(x),
                            None => break,
                        },
                        _ = tokio::task::yield_now(), if got.len() % 5 == 0 => {}
                    }
                }
                got
            });
            let got = tokio::time::timeout(std::time::Duration::from_secs(60), async {
                producer.await.unwrap();
                consumer.await.unwrap()
            })
            .await
            .expect("a lost wake-up: the pipe hung");
            assert_eq!(got, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_ends_can_move_between_threads() {
        fn send<X: Send>() {}
        fn send_sync<X: Send + Sync>() {}
        send_sync::<Sender<String>>();
        send::<Receiver<String>>();
        send::<Permit<'static, String>>();
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
