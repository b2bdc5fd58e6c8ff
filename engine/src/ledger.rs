//! Balances: per (user, asset) `available` and `locked`, the fee account, and the running totals of
//! deposits and withdrawals that the conservation invariant is checked against.
//!
//! Invariant (checked by [`Ledger::check_conservation`]): for every asset,
//! `Σ users (available + locked) + fees_collected + pooled = deposits − withdrawals`, where
//! `pooled` is what the AMM pools hold (the pool account; see [`crate::amm`]).
//! Every operation is checked: an operation that would overflow or go negative is refused before
//! anything changes, so a refused operation has no effect.

use crate::{FastMap, new_map};
use codec::{AssetId, UserId};

/// One user's holding of one asset, in the asset's minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    /// Free to use.
    pub available: u64,
    /// Reserved by open orders.
    pub locked: u64,
}

/// All balances. Accounts are kept in creation order, which is deterministic (journal order), so
/// iterating them for hashing or validation never depends on hash-map order.
#[derive(Debug, Clone)]
pub struct Ledger {
    asset_count: usize,
    /// Account owners in creation order.
    users: Vec<UserId>,
    /// Every account's balances in one flat array, `asset_count` per account in account order: a
    /// balance is one index computation away (no second allocation per account to chase).
    balances: Vec<Balance>,
    index: AccountMap,
    fees_collected: Vec<u64>,
    /// Held by AMM pools, per asset (the sum of the pools' reserves).
    pooled: Vec<u64>,
    deposited: Vec<u128>,
    withdrawn: Vec<u128>,
}

/// User ids below this are found through a plain array (4 bytes an id, at most 4 MiB), the rest
/// through a hash map: the exchange hands out user ids sequentially from 1, so in practice every
/// lookup is one array read instead of a hash probe (the ledger is looked up on every order).
const DENSE_USER_IDS_MAX: u64 = 1 << 20;

/// User id -> account position. Lookup state only: accounts themselves are kept (and hashed,
/// snapshotted, iterated) in creation order, so how this finds them cannot affect determinism.
#[derive(Debug, Clone)]
struct AccountMap {
    /// Indexed by user id below [`DENSE_USER_IDS_MAX`]: the account position + 1, 0 for none.
    /// Grown (doubling) when an account with a larger id is created.
    dense: Vec<u32>,
    /// Accounts of larger user ids.
    sparse: FastMap<UserId, u32>,
}

impl AccountMap {
    fn new(accounts_expected: usize) -> Self {
        let dense_len = (accounts_expected as u64).clamp(1, DENSE_USER_IDS_MAX) as usize;
        Self { dense: vec![0; dense_len], sparse: new_map(0) }
    }

    #[inline]
    fn get(&self, user_id: UserId) -> Option<u32> {
        match self.dense.get(user_id.get() as usize) {
            Some(&entry) => entry.checked_sub(1),
            None if user_id.get() < DENSE_USER_IDS_MAX => None,
            None => self.sparse.get(&user_id).copied(),
        }
    }

    fn insert(&mut self, user_id: UserId, position: u32) {
        let id = user_id.get();
        if id < DENSE_USER_IDS_MAX {
            let id = id as usize;
            if id >= self.dense.len() {
                let len = (id + 1).next_power_of_two().min(DENSE_USER_IDS_MAX as usize);
                self.dense.resize(len, 0);
            }
            self.dense[id] = position + 1;
        } else {
            self.sparse.insert(user_id, position);
        }
    }
}

/// The position of an account in the ledger (see [`Ledger::account_index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccountIndex(usize);

/// A ledger operation that was refused; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LedgerError {
    Insufficient,
    Overflow,
}

impl Ledger {
    pub(crate) fn new(asset_count: usize, accounts_expected: usize) -> Self {
        Self {
            asset_count,
            users: Vec::with_capacity(accounts_expected),
            balances: Vec::with_capacity(accounts_expected * asset_count),
            index: AccountMap::new(accounts_expected),
            fees_collected: vec![0; asset_count],
            pooled: vec![0; asset_count],
            deposited: vec![0; asset_count],
            withdrawn: vec![0; asset_count],
        }
    }

    /// The balance of a user in an asset (zero for unknown users or assets).
    pub fn balance(&self, user_id: UserId, asset: AssetId) -> Balance {
        match (self.slot(user_id), asset.get() as usize) {
            (Some(i), a) if a < self.asset_count => self.balances[i * self.asset_count + a],
            _ => Balance::default(),
        }
    }

    /// Fees collected so far in an asset.
    pub fn fees_collected(&self, asset: AssetId) -> u64 {
        self.fees_collected.get(asset.get() as usize).copied().unwrap_or(0)
    }

    /// What the AMM pools hold of an asset (the pool account).
    pub fn pooled(&self, asset: AssetId) -> u64 {
        self.pooled.get(asset.get() as usize).copied().unwrap_or(0)
    }

    /// Total deposited and total withdrawn of an asset.
    pub fn flows(&self, asset: AssetId) -> (u128, u128) {
        let i = asset.get() as usize;
        (self.deposited.get(i).copied().unwrap_or(0), self.withdrawn.get(i).copied().unwrap_or(0))
    }

    /// Visits every (user, asset, balance) in account creation order, assets in id order.
    pub fn visit_balances(&self, visit: &mut dyn FnMut(UserId, AssetId, Balance)) {
        for (user_id, balances) in self.accounts() {
            for (asset, balance) in balances.iter().enumerate() {
                visit(*user_id, AssetId::new(asset as u32), *balance);
            }
        }
    }

    /// Number of assets.
    pub fn asset_count(&self) -> usize {
        self.asset_count
    }

    /// Number of accounts.
    pub fn account_count(&self) -> usize {
        self.users.len()
    }

    /// Every account's owner and balances, in creation order.
    fn accounts(&self) -> impl Iterator<Item = (&UserId, &[Balance])> {
        let n = self.asset_count;
        self.users.iter().enumerate().map(move |(i, user_id)| (user_id, &self.balances[i * n..(i + 1) * n]))
    }

    #[inline]
    fn slot(&self, user_id: UserId) -> Option<usize> {
        self.index.get(user_id).map(|i| i as usize)
    }

    #[inline]
    pub(crate) fn get(&self, user_id: UserId, asset: AssetId) -> Balance {
        match self.slot(user_id) {
            Some(i) => self.balances[i * self.asset_count + asset.get() as usize],
            None => Balance::default(),
        }
    }

    /// The balance of an existing account, for in-place updates. Callers only reach this after
    /// checking the account exists (it holds funds they are about to move).
    #[inline]
    fn balance_mut(&mut self, user_id: UserId, asset: AssetId) -> Option<&mut Balance> {
        let i = self.slot(user_id)?;
        let a = asset.get() as usize;
        if a >= self.asset_count {
            return None;
        }
        self.balances.get_mut(i * self.asset_count + a)
    }

    /// The balance of a user in an asset, creating the user's account if needed.
    fn balance_mut_or_create(&mut self, user_id: UserId, asset: AssetId) -> &mut Balance {
        let i = match self.slot(user_id) {
            Some(i) => i,
            None => {
                let i = self.users.len();
                self.users.push(user_id);
                self.balances.resize(self.balances.len() + self.asset_count, Balance::default());
                self.index.insert(user_id, i as u32);
                i
            }
        };
        &mut self.balances[i * self.asset_count + asset.get() as usize]
    }

    /// The index of a user's account, for a run of operations on it without a lookup each
    /// (settling a fill). Accounts are never removed, so an index stays valid.
    #[inline]
    pub(crate) fn account_index(&self, user_id: UserId) -> Option<AccountIndex> {
        self.slot(user_id).map(AccountIndex)
    }

    #[inline]
    fn balance_at_mut(&mut self, account: AccountIndex, asset: AssetId) -> &mut Balance {
        debug_assert!((asset.get() as usize) < self.asset_count);
        &mut self.balances[account.0 * self.asset_count + asset.get() as usize]
    }

    /// The balance of an account in an asset.
    #[inline]
    pub(crate) fn balance_at(&self, account: AccountIndex, asset: AssetId) -> Balance {
        debug_assert!((asset.get() as usize) < self.asset_count);
        self.balances[account.0 * self.asset_count + asset.get() as usize]
    }

    /// [`Self::unlock`] on an account index.
    #[inline]
    pub(crate) fn unlock_at(
        &mut self,
        account: AccountIndex,
        asset: AssetId,
        amount: u64,
    ) -> Result<Balance, LedgerError> {
        let balance = self.balance_at_mut(account, asset);
        let locked = balance.locked.checked_sub(amount).ok_or(LedgerError::Insufficient)?;
        balance.available += amount;
        balance.locked = locked;
        Ok(*balance)
    }

    /// Takes `amount` out of locked (a maker's reservation paying for its fill).
    #[inline]
    pub(crate) fn spend_locked_at(
        &mut self,
        account: AccountIndex,
        asset: AssetId,
        amount: u64,
    ) -> Result<Balance, LedgerError> {
        let balance = self.balance_at_mut(account, asset);
        balance.locked = balance.locked.checked_sub(amount).ok_or(LedgerError::Insufficient)?;
        Ok(*balance)
    }

    /// Takes `amount` out of available (a taker paying for its fill).
    #[inline]
    pub(crate) fn spend_available_at(
        &mut self,
        account: AccountIndex,
        asset: AssetId,
        amount: u64,
    ) -> Result<Balance, LedgerError> {
        let balance = self.balance_at_mut(account, asset);
        balance.available = balance.available.checked_sub(amount).ok_or(LedgerError::Insufficient)?;
        Ok(*balance)
    }

    /// [`Self::credit`] on an account index.
    #[inline]
    pub(crate) fn credit_at(&mut self, account: AccountIndex, asset: AssetId, amount: u64) -> Balance {
        let balance = self.balance_at_mut(account, asset);
        balance.available += amount;
        *balance
    }

    /// Credits a deposit to available.
    pub(crate) fn deposit(&mut self, user_id: UserId, asset: AssetId, amount: u64) -> Result<Balance, LedgerError> {
        let a = asset.get() as usize;
        let current = self.get(user_id, asset);
        let available = current.available.checked_add(amount).ok_or(LedgerError::Overflow)?;
        // The asset's total in circulation must stay below 2^64 so that every sum of balances fits.
        let outstanding = self.deposited[a] - self.withdrawn[a] + u128::from(amount);
        if outstanding > u128::from(u64::MAX) {
            return Err(LedgerError::Overflow);
        }
        self.deposited[a] += u128::from(amount);
        let balance = self.balance_mut_or_create(user_id, asset);
        balance.available = available;
        Ok(*balance)
    }

    /// Debits a withdrawal from available.
    pub(crate) fn withdraw(&mut self, user_id: UserId, asset: AssetId, amount: u64) -> Result<Balance, LedgerError> {
        let a = asset.get() as usize;
        let balance = self.balance_mut(user_id, asset).ok_or(LedgerError::Insufficient)?;
        balance.available = balance.available.checked_sub(amount).ok_or(LedgerError::Insufficient)?;
        let after = *balance;
        self.withdrawn[a] += u128::from(amount);
        Ok(after)
    }

    /// Moves `amount` from available to locked in an account (an order's reservation).
    #[inline]
    pub(crate) fn lock_at(
        &mut self,
        account: AccountIndex,
        asset: AssetId,
        amount: u64,
    ) -> Result<Balance, LedgerError> {
        let balance = self.balance_at_mut(account, asset);
        let available = balance.available.checked_sub(amount).ok_or(LedgerError::Insufficient)?;
        // Cannot overflow: available + locked never exceeds the asset's outstanding total (< 2^64).
        balance.locked += amount;
        balance.available = available;
        Ok(*balance)
    }

    /// Moves `amount` from locked back to available.
    pub(crate) fn unlock(&mut self, user_id: UserId, asset: AssetId, amount: u64) -> Result<Balance, LedgerError> {
        let balance = self.balance_mut(user_id, asset).ok_or(LedgerError::Insufficient)?;
        let locked = balance.locked.checked_sub(amount).ok_or(LedgerError::Insufficient)?;
        balance.available += amount;
        balance.locked = locked;
        Ok(*balance)
    }

    /// Adds `amount` to available (proceeds of a fill). Only called with amounts just taken from
    /// another balance or the fee split, so totals cannot exceed the outstanding total.
    pub(crate) fn credit(&mut self, user_id: UserId, asset: AssetId, amount: u64) -> Balance {
        let balance = self.balance_mut_or_create(user_id, asset);
        balance.available += amount;
        *balance
    }

    /// Adds a collected fee to the fee account.
    pub(crate) fn collect_fee(&mut self, asset: AssetId, amount: u64) {
        self.fees_collected[asset.get() as usize] += amount;
    }

    /// Moves `amount` from a user's available balance into the pool account.
    pub(crate) fn pay_into_pool(
        &mut self,
        user_id: UserId,
        asset: AssetId,
        amount: u64,
    ) -> Result<Balance, LedgerError> {
        let balance = self.balance_mut(user_id, asset).ok_or(LedgerError::Insufficient)?;
        balance.available = balance.available.checked_sub(amount).ok_or(LedgerError::Insufficient)?;
        let after = *balance;
        // Cannot overflow: the pool account's total never exceeds the asset's outstanding total.
        self.pooled[asset.get() as usize] += amount;
        Ok(after)
    }

    /// Moves `amount` from the pool account to a user's available balance.
    pub(crate) fn pay_out_of_pool(
        &mut self,
        user_id: UserId,
        asset: AssetId,
        amount: u64,
    ) -> Result<Balance, LedgerError> {
        let a = asset.get() as usize;
        self.pooled[a] = self.pooled[a].checked_sub(amount).ok_or(LedgerError::Insufficient)?;
        Ok(self.credit(user_id, asset, amount))
    }

    /// Sets the pool account of an asset (restoring a snapshot, from the pools' reserves).
    pub(crate) fn set_pooled(&mut self, asset: AssetId, amount: u64) {
        self.pooled[asset.get() as usize] = amount;
    }

    /// Checks the conservation invariant for every asset.
    ///
    /// # Errors
    /// A description of the first asset whose books do not balance.
    pub fn check_conservation(&self) -> Result<(), String> {
        let mut held = vec![0u128; self.asset_count];
        for (_, balances) in self.accounts() {
            for (a, balance) in balances.iter().enumerate() {
                held[a] += u128::from(balance.available) + u128::from(balance.locked);
            }
        }
        for (a, held) in held.into_iter().enumerate() {
            let left = held + u128::from(self.fees_collected[a]) + u128::from(self.pooled[a]);
            let right = self.deposited[a] - self.withdrawn[a];
            if left != right {
                return Err(format!(
                    "asset {a}: balances {held} + fees {} + pooled {} != deposits {} - withdrawals {}",
                    self.fees_collected[a], self.pooled[a], self.deposited[a], self.withdrawn[a]
                ));
            }
        }
        Ok(())
    }

    /// Appends the ledger's state to a snapshot (format in [`crate::snapshot`]).
    pub(crate) fn write_snapshot(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.users.len() as u64).to_le_bytes());
        for (user_id, balances) in self.accounts() {
            out.extend_from_slice(&user_id.get().to_le_bytes());
            for balance in balances {
                out.extend_from_slice(&balance.available.to_le_bytes());
                out.extend_from_slice(&balance.locked.to_le_bytes());
            }
        }
        for a in 0..self.asset_count {
            out.extend_from_slice(&self.fees_collected[a].to_le_bytes());
            out.extend_from_slice(&self.deposited[a].to_le_bytes());
            out.extend_from_slice(&self.withdrawn[a].to_le_bytes());
        }
    }

    /// Replaces an empty ledger's state with a snapshot's.
    pub(crate) fn read_snapshot(
        &mut self,
        r: &mut crate::snapshot::Reader<'_>,
    ) -> Result<(), crate::snapshot::SnapshotError> {
        let count = r.u64()? as usize;
        for _ in 0..count {
            let user_id = UserId::new(r.u64()?);
            if self.index.get(user_id).is_some() {
                return Err(crate::snapshot::invalid(format!("account {user_id} twice")));
            }
            for _ in 0..self.asset_count {
                self.balances.push(Balance { available: r.u64()?, locked: r.u64()? });
            }
            self.index.insert(user_id, self.users.len() as u32);
            self.users.push(user_id);
        }
        for a in 0..self.asset_count {
            self.fees_collected[a] = r.u64()?;
            self.deposited[a] = r.u128()?;
            self.withdrawn[a] = r.u128()?;
            if self.withdrawn[a] > self.deposited[a] {
                return Err(crate::snapshot::invalid(format!("asset {a}: withdrawn exceeds deposited")));
            }
        }
        Ok(())
    }

    /// Feeds the ledger's full state to a hasher, in deterministic order.
    pub(crate) fn hash_into<H: crate::hash::StateWords>(&self, hasher: &mut H) {
        hasher.u64(self.users.len() as u64);
        for (user_id, balances) in self.accounts() {
            hasher.u64(user_id.get());
            for balance in balances {
                hasher.u64(balance.available);
                hasher.u64(balance.locked);
            }
        }
        for a in 0..self.asset_count {
            hasher.u64(self.fees_collected[a]);
            hasher.u128(self.deposited[a]);
            hasher.u128(self.withdrawn[a]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accounts are found whatever their user id: below the dense bound (the array grows past its
    /// start-up length), at and beyond it (the hash map), and an unknown id is no account.
    #[test]
    fn accounts_are_found_on_both_sides_of_the_dense_id_bound() {
        let mut ledger = Ledger::new(2, 4);
        let ids = [1, 3, 4, 5, 1_000, DENSE_USER_IDS_MAX - 1, DENSE_USER_IDS_MAX, u64::MAX];
        for (n, &id) in ids.iter().enumerate() {
            ledger.deposit(UserId::new(id), AssetId::new(1), 10 + n as u64).expect("deposit fits");
        }
        assert_eq!(ledger.account_count(), ids.len());
        for (n, &id) in ids.iter().enumerate() {
            let account = ledger.account_index(UserId::new(id)).expect("account exists");
            assert_eq!(account, AccountIndex(n), "user {id}");
            assert_eq!(ledger.balance(UserId::new(id), AssetId::new(1)).available, 10 + n as u64);
        }
        for id in [0, 2, 6, 999, DENSE_USER_IDS_MAX + 1, u64::MAX - 1] {
            assert_eq!(ledger.account_index(UserId::new(id)), None, "user {id}");
        }
        assert!(ledger.index.dense.len() <= DENSE_USER_IDS_MAX as usize);
    }
}
